"""Source text -> AST, with parse errors turned into file:line:col diagnostics."""

from __future__ import annotations

import difflib
import textwrap
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from aldsl.language import ast
from aldsl.language.diagnostics import AlpError, Diagnostic

KINDS = ("data", "template", "generator", "prompter", "reward", "evaluator", "finetune", "flow", "optimize")

_TERMINAL_NAMES = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "LONG_STRING": "a string",
    "KIND": "a declaration (" + ", ".join(KINDS) + ")",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "EQUAL": "'='",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "DOT": "'.'",
    "COLON": "':'",
    "IN": "'in'",
    "LOG": "'log'",
    "TRUE": "'true'",
    "FALSE": "'false'",
    "NONE": "'none'",
    "PROGRAM": "'program'",
    "$END": "the end of the file",
}


def grammar_text() -> str:
    """The grammar shipped inside the wheel, or the repository's copy in a source checkout."""
    packaged = resources.files("aldsl") / "_grammar" / "alp.lark"
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammar" / "alp.lark").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def _lark() -> Lark:
    return Lark(grammar_text(), parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False)


def _pos(meta_or_token: object) -> ast.Pos:
    m = meta_or_token
    return ast.Pos(m.line, m.column, m.end_line, m.end_column)  # type: ignore[attr-defined]


class _EscapeError(ValueError):
    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0", "{": "{", "}": "}"}


def unescape(body: str) -> str:
    """Decode the escapes of a one-line string body (\\n \\t \\r \\\\ \\" \\uXXXX ...)."""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u":
            digits = body[i + 2 : i + 6]
            if len(digits) != 4 or any(ch not in "0123456789abcdefABCDEF" for ch in digits):
                raise _EscapeError("\\u needs exactly four hex digits, e.g. \\u00e9", i)
            out.append(chr(int(digits, 16)))
            i += 6
        else:
            raise _EscapeError(f"unknown escape '\\{nxt}' in string", i)
    return "".join(out)


def long_string_value(raw: str) -> str:
    """A triple-quoted string is raw text: drop the first newline and common indentation."""
    body = raw[3:-3]
    if body.startswith("\n"):
        body = body[1:]
    lines = body.split("\n")
    if lines and not lines[-1].strip():
        lines[-1] = ""
    return textwrap.dedent("\n".join(lines)).rstrip(" \t").removesuffix("\n")


class _ToAst(Transformer):
    """Lark tree -> ast nodes."""

    @v_args(meta=True)
    def start(self, meta, children):
        header, *decls = children
        return header, tuple(decls)

    @v_args(meta=True)
    def program(self, meta, children):
        name = str(children[0])
        desc = self._string_value(children[1]) if len(children) > 1 else ""
        return name, desc, _pos(meta)

    @v_args(meta=True)
    def decl(self, meta, children):
        kind, name, call = children
        return ast.Decl(str(kind), str(name), call, _pos(meta), _pos(name))

    @v_args(meta=True)
    def call(self, meta, children):
        name, *args = children
        return ast.Call(str(name), tuple(a for a in args if a is not None), _pos(meta))

    @v_args(meta=True)
    def keyword_arg(self, meta, children):
        return ast.Arg(str(children[0]), children[1], _pos(meta))

    @v_args(meta=True)
    def positional_arg(self, meta, children):
        return ast.Arg(None, children[0], _pos(meta))

    @v_args(meta=True)
    def search(self, meta, children):
        return ast.Search(children[0], children[1], _pos(meta))

    @v_args(meta=True)
    def range(self, meta, children):
        return ast.Range(children[0], children[1], False, _pos(meta))

    @v_args(meta=True)
    def log_range(self, meta, children):
        return ast.Range(children[0], children[1], True, _pos(meta))

    @v_args(meta=True)
    def choices(self, meta, children):
        return ast.Choices(tuple(children), _pos(meta))

    @v_args(meta=True)
    def number(self, meta, children):
        text = str(children[0])
        is_int = not any(c in text for c in ".eE")
        return ast.Number(int(text) if is_int else float(text), _pos(meta))

    def _string_value(self, token: Token) -> str:
        if token.type == "LONG_STRING":
            return long_string_value(str(token))
        try:
            return unescape(str(token)[1:-1])
        except _EscapeError as e:
            col = token.column + 1 + e.offset  # type: ignore[operator]
            raise AlpError("", "", [Diagnostic(str(e), ast.Pos(token.line, col, token.line, col + 2),
                                               "write \\\\ for a backslash")]) from None

    @v_args(meta=True)
    def string(self, meta, children):
        return ast.String(self._string_value(children[0]), _pos(meta))

    @v_args(meta=True)
    def long_string(self, meta, children):
        return ast.String(self._string_value(children[0]), _pos(meta))

    @v_args(meta=True)
    def true(self, meta, children):
        return ast.Bool(True, _pos(meta))

    @v_args(meta=True)
    def false(self, meta, children):
        return ast.Bool(False, _pos(meta))

    @v_args(meta=True)
    def none(self, meta, children):
        return ast.NoneLit(_pos(meta))

    @v_args(meta=True)
    def ref(self, meta, children):
        return ast.Ref(tuple(str(c) for c in children), _pos(meta))

    @v_args(meta=True)
    def list(self, meta, children):
        return ast.ListLit(tuple(c for c in children if c is not None), _pos(meta))

    @v_args(meta=True)
    def dict(self, meta, children):
        return ast.DictLit(tuple(c for c in children if c is not None), _pos(meta))

    def pair(self, children):
        key, value = children
        k = self._string_value(key) if key.type in ("STRING", "LONG_STRING") else str(key)
        return (k, value)


def parse(source: str, path: str = "<string>") -> ast.Program:
    """Parse .alp source text into an AST; raises AlpError with positions on bad input."""
    source = source.removeprefix("\ufeff")  # a UTF-8 byte-order mark, as some editors write
    if "\x00" in source:
        line = source[: source.index("\x00")].count("\n") + 1
        raise AlpError(path, source, [Diagnostic("the file contains a NUL byte; is it a text file?",
                                                 ast.Pos(line, 1, line, 1))])
    try:
        tree = _lark().parse(source)
        (name, desc, pos), decls = _ToAst().transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, AlpError):
            raise AlpError(path, source, e.orig_exc.diagnostics) from None
        raise
    except UnexpectedInput as e:
        raise AlpError(path, source, [_diagnose(e, source)]) from None
    except RecursionError:
        raise AlpError(path, source, [Diagnostic("the program is nested too deeply to parse", None,
                                                 "flatten the nesting of lists, dicts or calls")]) from None
    return ast.Program(name, desc, decls, pos, path, source)


def parse_file(path: str | Path) -> ast.Program:
    """Read and parse a .alp file."""
    from aldsl.errors import UserError

    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file; check the path (relative paths start from {Path.cwd()})")
    if p.is_dir():
        raise UserError(f"{p}: is a folder; give the path of a .alp file inside it")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text (byte {e.start}); save the program as UTF-8") from None
    return parse(text, str(p))


def _describe(expected: set[str]) -> str:
    names = sorted({_TERMINAL_NAMES.get(t, repr(t.lower()) if t.isupper() else t) for t in expected})
    if len(names) > 6:
        names = names[:6] + ["..."]
    return ", ".join(names)


def _diagnose(e: UnexpectedInput, source: str) -> Diagnostic:
    """Turn a lark exception into one diagnostic with a useful hint."""
    lines = source.splitlines()
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        last = max(len(lines), 1)
        col = len(lines[-1]) + 1 if lines else 1
        expected = e.expected if isinstance(e, UnexpectedEOF) else e.expected
        if not source.strip():
            return Diagnostic("empty program", ast.Pos(1, 1, 1, 1),
                              'a program starts with: program NAME "what it does"')
        return Diagnostic(f"the file ends too early; expected {_describe(set(expected))}",
                          ast.Pos(last, col, last, col), "close every '(', '[' and '{' you open")
    if isinstance(e, UnexpectedCharacters):
        ch = source[e.pos_in_stream] if e.pos_in_stream < len(source) else ""
        pos = ast.Pos(e.line, e.column, e.line, e.column + 1)
        if ch == '"':
            return Diagnostic("unterminated string", pos,
                              'close it with " on the same line, or use """...""" for text over several lines')
        if e.line == 1 and e.column == 1 or not any(l.strip() for l in lines[: e.line - 1]):
            return Diagnostic(f"unexpected {ch!r}: a program starts with `program NAME`", pos,
                              'write the first line as: program my_program "what it does"')
        word = _word_at(source, e.pos_in_stream)
        allowed = set(e.allowed or ())
        if word and allowed <= {"KIND", "$END"} | set():
            return _unknown_kind(word, ast.Pos(e.line, e.column, e.line, e.column + len(word)))
        if word and "KIND" in allowed:
            return _unknown_kind(word, ast.Pos(e.line, e.column, e.line, e.column + len(word)))
        what = f"{ch!r}" if ch.strip() else "character"
        return Diagnostic(f"unexpected {what}; expected {_describe(allowed)}", pos,
                          _hint_for(allowed, None, source[: e.pos_in_stream].rstrip()))
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    width = max(len(str(tok.value)), 1)
    pos = ast.Pos(tok.line, tok.column, tok.line, tok.column + width)
    expected = set(e.accepts or e.expected)
    before = source[: tok.start_pos].rstrip()
    if tok.type in ("LSQB", "LBRACE", "LOG") and before.endswith("in") and not _word_at(before, len(before) - 3)[1:]:
        return Diagnostic("a search needs a default value before 'in'", pos,
                          "write DEFAULT in [lo, hi], e.g. temperature = 0.7 in [0.1, 1.2]")
    if expected == {"PROGRAM"}:
        return Diagnostic(f"unexpected {str(tok.value)!r}: a program starts with `program NAME`", pos,
                          'write the first line as: program my_program "what it does"')
    if "KIND" in expected and tok.type == "NAME":
        return _unknown_kind(str(tok.value), pos)
    if tok.type == "KIND" and "NAME" in expected:
        return Diagnostic(f"{tok.value!r} is a declaration keyword and cannot be used as a name here", pos,
                          f"pick another name, e.g. {tok.value}s or my_{tok.value}")
    got = {"KIND": "declaration keyword"}.get(tok.type, "") or repr(str(tok.value))
    return Diagnostic(f"unexpected {got}; expected {_describe(expected)}", pos, _hint_for(expected, tok, before))


def _word_at(source: str, i: int) -> str:
    j = i
    while j < len(source) and (source[j].isalnum() or source[j] == "_"):
        j += 1
    return source[i:j]


def _unknown_kind(word: str, pos: ast.Pos) -> Diagnostic:
    close = difflib.get_close_matches(word, KINDS, n=1)
    hint = f"did you mean '{close[0]}'?" if close else "each declaration is: KIND NAME = constructor(...)"
    return Diagnostic(f"unknown declaration kind {word!r}; expected one of {', '.join(KINDS)}", pos, hint)


def _hint_for(expected: set[str], tok: Token | None, before: str) -> str:
    if tok is not None and tok.type == "RBRACE" and before.endswith("{"):
        return "a choice set needs at least one option: write DEFAULT in {a, b}"
    if tok is not None and tok.type == "COMMA" and before.endswith(","):
        return "two commas in a row: remove one, or put a value between them"
    if {"COMMA", "RPAR"} <= expected and tok is not None and tok.type in ("NAME", "NUMBER", "STRING"):
        return "missing ',' between arguments?"
    if expected == {"EQUAL"}:
        return "each declaration is: KIND NAME = constructor(...)"
    if "LPAR" in expected and len(expected) == 1:
        return "a declaration's value is a constructor call, e.g. model(\"smollm2-135m\")"
    if before.endswith((" in", "log")) and {"LSQB", "LBRACE", "LOG"} & expected:
        return "a search domain is [lo, hi], log[lo, hi] or {a, b, c}"
    if tok is not None and tok.type == "IN":
        return "only a value can be searched: write DEFAULT in [lo, hi]"
    return ""
