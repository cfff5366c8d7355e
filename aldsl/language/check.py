"""The checker: resolves names, checks types, ranges, files and the program's semantics.

Its output, a :class:`Checked` program, holds every declaration's parameters as plain Python
values, with references as :class:`Link`/:class:`SplitLink`, nested calls as :class:`Nested` and
searchable values as :class:`SearchVal`. Every problem is reported with its position; all of them
are collected before raising one :class:`AlpError`.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aldsl.language import ast
from aldsl.language.diagnostics import AlpError, Diagnostic
from aldsl.language.schema import BY_KIND, SERVER_PARAMS, TRAINED_REWARDS, Constructor, Param, Type
from aldsl.language.templates import BUILTIN as BUILTIN_TEMPLATES
from aldsl.language.templates import slots
from aldsl.language.text import alp_text

HELD_OUT = "test"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class Link:
    """A reference to a declaration (or a built-in template)."""

    kind: str
    name: str


@dataclass(frozen=True)
class SplitLink:
    """``data.split``."""

    data: str
    split: str


@dataclass(frozen=True)
class Nested:
    """A nested constructor call used as a value, e.g. ``demos(problems.train, k = 2)``."""

    ctor: str
    params: dict[str, Any]
    pos: ast.Pos


@dataclass(frozen=True)
class SearchVal:
    """A searchable value: a range (``low``/``high``/``log``) or a set of ``choices``."""

    default: Any
    low: Any = None
    high: Any = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    pos: ast.Pos | None = None
    option_pos: tuple[ast.Pos, ...] = ()


@dataclass
class CheckedDecl:
    kind: str
    name: str
    ctor: str
    params: dict[str, Any]
    pos: ast.Pos
    param_pos: dict[str, ast.Pos] = field(default_factory=dict)


@dataclass
class Checked:
    program: ast.Program
    decls: dict[str, CheckedDecl]
    warnings: list[Diagnostic]
    overrides: dict[str, Any] = field(default_factory=dict)  # --set values applied to the source's AST
    auto: list[str] = field(default_factory=list)  # space = auto: why each proposed value (aldsl.language.auto)

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def base_dir(self) -> Path:
        return Path(self.program.path).resolve().parent if self.program.path != "<string>" else Path.cwd()

    def of_kind(self, kind: str) -> list[CheckedDecl]:
        return [d for d in self.decls.values() if d.kind == kind]

    def generator_of(self, finetune: str) -> str | None:
        """The model generator whose ``finetune`` (its value or any of its choices) is ``finetune``."""
        for d in self.of_kind("generator"):
            if d.ctor == "model" and any(isinstance(v, Link) and v.name == finetune
                                         for v in options_of(d.params["finetune"])):
                return d.name
        return None

    @property
    def flow(self) -> CheckedDecl:
        return self.of_kind("flow")[0]

    @property
    def optimize(self) -> CheckedDecl | None:
        found = self.of_kind("optimize")
        return found[0] if found else None


class _Fail(Exception):
    """A value did not type-check (message and position carried to the collector)."""

    def __init__(self, message: str, pos: ast.Pos | None, hint: str = ""):
        super().__init__(message)
        self.diag = Diagnostic(message, pos, hint)


def _did_you_mean(word: str, options: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


class Checker:
    """Checks one parsed program; use :func:`check`."""

    def __init__(self, program: ast.Program):
        self.program = program
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.decls: dict[str, ast.Decl] = {}
        self.out: dict[str, CheckedDecl] = {}
        self.base_dir = Path(program.path).resolve().parent if program.path != "<string>" else Path.cwd()

    def error(self, message: str, pos: ast.Pos | None, hint: str = "") -> None:
        self.errors.append(Diagnostic(message, pos, hint))

    # ---- entry
    def run(self) -> Checked:
        for d in self.program.decls:
            if d.name in self.decls:
                first = self.decls[d.name]
                self.error(f"'{d.name}' is already declared (as a {first.kind} on line {first.pos.line})",
                           d.name_pos, "give each declaration its own name")
                continue
            if d.kind == "template" and d.name in BUILTIN_TEMPLATES:
                self.warnings.append(Diagnostic(f"template '{d.name}' replaces the built-in of that name",
                                                d.name_pos))
            self.decls[d.name] = d
        for d in self.decls.values():
            self._check_decl(d)
        if not self.errors:
            self._check_program()
        if self.errors:
            self.errors.sort(key=lambda e: (e.pos.line, e.pos.col) if e.pos else (0, 0))
            raise AlpError(self.program.path, self.program.source, self.errors)
        return Checked(self.program, self.out, self.warnings)

    # ---- one declaration
    def _check_decl(self, d: ast.Decl) -> None:
        ctors = BY_KIND.get(d.kind, {})
        ctor = ctors.get(d.call.name)
        if ctor is None:
            hint = _did_you_mean(d.call.name, list(ctors)) or f"a {d.kind} is one of: {', '.join(ctors)}"
            self.error(f"unknown {d.kind} constructor '{d.call.name}'", d.call.pos, hint)
            return
        params, positions = self._check_args(d.call, ctor, d.kind)
        if params is not None:
            self.out[d.name] = CheckedDecl(d.kind, d.name, ctor.name, params, d.pos, positions)

    def _check_args(self, call: ast.Call, ctor: Constructor, where: str) -> tuple[dict[str, Any] | None, dict[str, ast.Pos]]:
        values: dict[str, Any] = {}
        positions: dict[str, ast.Pos] = {}
        positional = [p for p in ctor.params if p.positional]
        ok = True
        seen_keyword = False
        for i, arg in enumerate(call.args):
            if arg.key is None:
                if seen_keyword:
                    self.error("a positional argument cannot follow keyword arguments", arg.pos,
                               "put positional arguments first, or name this one")
                    ok = False
                    continue
                if i >= len(positional):
                    names = ", ".join(p.name for p in ctor.params)
                    self.error(f"{ctor.name}() takes {len(positional)} positional argument(s); name this one",
                               arg.pos, f"parameters: {names}")
                    ok = False
                    continue
                param = positional[i]
            else:
                seen_keyword = True
                param = ctor.param(arg.key)
                if param is None:
                    names = [p.name for p in ctor.params]
                    hint = _did_you_mean(arg.key, names) or f"{ctor.name}() takes: {', '.join(names)}"
                    self.error(f"{ctor.name}() has no parameter '{arg.key}'", arg.pos, hint)
                    ok = False
                    continue
            if param.name in values:
                self.error(f"'{param.name}' is given twice", arg.pos, "keep one of them")
                ok = False
                continue
            try:
                values[param.name] = self._value(arg.value, param, ctor)
                positions[param.name] = arg.value.pos
            except _Fail as f:
                if f.diag.message:  # empty: already reported inside a nested call
                    self.errors.append(f.diag)
                ok = False
        for p in ctor.params:
            if p.name not in values and p.name not in positions:
                if p.required:
                    if ok:
                        self.error(f"{ctor.name}() needs '{p.name}' ({p.type.describe()})", call.pos,
                                   f"add {p.name} = ...   # {p.doc}" if p.doc else "")
                    ok = False
                else:
                    values[p.name] = p.default
        return (values if ok else None), positions

    # ---- values
    def _value(self, v: ast.Value, param: Param, ctor: Constructor) -> Any:
        if isinstance(v, ast.Search):
            if not param.searchable:
                raise _Fail(f"'{param.name}' of {ctor.name}() cannot be searched", v.pos,
                            "give it a single value")
            return self._search(v, param)
        return self._typed(v, param.type, param)

    def _search(self, v: ast.Search, param: Param) -> SearchVal:
        default = self._typed(v.default, param.type, param)
        dom = v.domain
        if isinstance(dom, ast.Range):
            if param.type.kind not in ("int", "float"):
                raise _Fail(f"'{param.name}' is {param.type.describe()}; a range [lo, hi] needs a number",
                            dom.pos, "search a set of values instead: DEFAULT in {a, b}")
            lo = self._typed(dom.low, param.type, param)
            hi = self._typed(dom.high, param.type, param)
            if not lo < hi:
                raise _Fail(f"empty range: low {lo} must be below high {hi}", dom.pos,
                            f"write [{hi}, {lo}]" if hi < lo else "widen the range, or give a single value")
            if dom.log and lo <= 0:
                raise _Fail("a log range needs a low bound above 0", dom.low.pos,
                            "use a small positive low such as 1e-5, or a plain [lo, hi]")
            if not lo <= default <= hi:
                raise _Fail(f"default {default} is outside the range [{lo}, {hi}]", v.default.pos,
                            "pick a default inside the range")
            return SearchVal(default, lo, hi, dom.log, None, v.pos)
        options = tuple(self._typed(o, param.type, param) for o in dom.options)
        keys = [_key(o) for o in options]
        dupes = {k for k in keys if keys.count(k) > 1}
        if dupes:
            raise _Fail(f"the choice set repeats {sorted(dupes)[0]}", dom.pos, "list each option once")
        if _key(default) not in keys:
            raise _Fail(f"default {_key(default)} is not one of the choices", v.default.pos,
                        f"choose one of: {', '.join(keys)}")
        return SearchVal(default, None, None, False, options, v.pos, tuple(o.pos for o in dom.options))

    def _typed(self, v: ast.Value, t: Type, param: Param) -> Any:
        if isinstance(v, ast.Search):
            raise _Fail("a searchable value cannot be nested inside another value", v.pos,
                        "search the whole parameter instead")
        return self._TYPED[t.kind](self, v, t, param)

    def _union(self, v: ast.Value, t: Type, param: Param) -> Any:
        failures: list[_Fail] = []
        for member in t.options:
            try:
                return self._typed(v, member, param)
            except _Fail as f:
                failures.append(f)
        specific = [f for f in failures if not f.diag.message.startswith("expected")]
        if specific:
            raise specific[0]
        raise _Fail(f"'{param.name}' must be {t.describe()}", v.pos, param.doc)

    def _none(self, v: ast.Value, t: Type, param: Param) -> None:
        if not isinstance(v, ast.NoneLit):
            raise _Fail("expected none", v.pos)

    def _number(self, v: ast.Value, t: Type, param: Param) -> int | float:
        if not isinstance(v, ast.Number) or isinstance(v, ast.Bool):
            raise _Fail(f"expected {t.describe()} for '{param.name}'", v.pos, param.doc)
        num = v.value
        if isinstance(num, float) and not math.isfinite(num):
            raise _Fail(f"'{param.name}' must be finite", v.pos)
        if t.kind == "int" and not isinstance(num, int):
            raise _Fail(f"'{param.name}' must be an integer, not {num}", v.pos, f"write {round(num)}")
        num = float(num) if t.kind == "float" else num
        if abs(num) > 1e15:
            raise _Fail(f"{num} is too large for '{param.name}'", v.pos)
        self._bounds(num, t, param, v.pos)
        return num

    def _bool(self, v: ast.Value, t: Type, param: Param) -> bool:
        if isinstance(v, ast.Bool):
            return v.value
        raise _Fail(f"expected true or false for '{param.name}'", v.pos)

    def _str(self, v: ast.Value, t: Type, param: Param) -> str:
        if not isinstance(v, ast.String):
            raise _Fail(f"expected a string for '{param.name}'", v.pos, 'strings are in double quotes: "..."')
        return v.value

    def _path(self, v: ast.Value, t: Type, param: Param) -> str:
        text = self._str(v, t, param)
        p = self.base_dir / text
        if not p.exists():
            raise _Fail(f"file not found: {text} (looked in {p.parent})", v.pos, "paths are relative to the program file")
        return str(p.resolve())

    def _strs(self, v: ast.Value, t: Type, param: Param) -> list[str]:
        if not isinstance(v, ast.ListLit) or not all(isinstance(i, ast.String) for i in v.items):
            raise _Fail(f"expected a list of strings for '{param.name}'", v.pos, 'e.g. ["\\n\\n", "Q:"]')
        return [i.value for i in v.items]  # type: ignore[union-attr]

    def _enum(self, v: ast.Value, t: Type, param: Param) -> str:
        word = v.dotted if isinstance(v, ast.Ref) else v.value if isinstance(v, ast.String) else None
        if isinstance(v, ast.NoneLit) and "none" in t.options:  # e.g. pruner = none
            word = "none"
        if word in t.options:
            return word
        if isinstance(word, str):
            raise _Fail(f"'{word}' is not a valid {param.name}", v.pos, _did_you_mean(word, t.options) or t.describe())
        raise _Fail(f"expected {t.describe()} for '{param.name}'", v.pos)

    def _one_ref(self, v: ast.Value, t: Type, param: Param) -> Link:
        if not isinstance(v, ast.Ref) or len(v.parts) != 1:
            raise _Fail(f"expected {t.describe()} for '{param.name}'", v.pos)
        return self._ref(v, t.options)

    def _refs(self, v: ast.Value, t: Type, param: Param) -> list[Link]:
        if not isinstance(v, ast.ListLit) or not v.items:
            raise _Fail(f"expected {t.describe()} for '{param.name}'", v.pos, "e.g. [a, b]")
        return [self._one_ref(item, t, param) for item in v.items]

    def _data(self, v: ast.Value, t: Type, param: Param) -> Link:
        if not isinstance(v, ast.Ref) or len(v.parts) != 1:
            raise _Fail(f"expected {t.describe()} for '{param.name}'", v.pos, "e.g. data = problems")
        return self._ref(v, ("data",))

    def _split(self, v: ast.Value, t: Type, param: Param) -> SplitLink:
        if not isinstance(v, ast.Ref) or len(v.parts) != 2:
            raise _Fail(f"expected a split such as problems.train for '{param.name}'", v.pos)
        link = self._ref(ast.Ref(v.parts[:1], v.pos), ("data",))
        return SplitLink(link.name, v.parts[1])

    def _fractions(self, v: ast.Value, t: Type, param: Param) -> str | dict[str, float]:
        if isinstance(v, ast.String):
            return v.value
        if not isinstance(v, ast.DictLit):
            raise _Fail("split must be fractions such as {train: 0.6, dev: 0.2, test: 0.2} or a field name", v.pos)
        out: dict[str, float] = {}
        for key, val in v.items:
            if not isinstance(val, ast.Number) or not 0 < val.value <= 1:
                raise _Fail(f"the fraction of split '{key}' must be a number in (0, 1]", val.pos)
            out[key] = float(val.value)
        if abs(sum(out.values()) - 1) > 1e-6:
            raise _Fail(f"split fractions sum to {sum(out.values()):g}, not 1", v.pos,
                        "e.g. {train: 0.6, dev: 0.2, test: 0.2}")
        return out

    def _call(self, v: ast.Value, t: Type, param: Param) -> Nested:
        if not isinstance(v, ast.Call):
            raise _Fail(f"expected {t.describe()} for '{param.name}'", v.pos)
        nested = BY_KIND["nested"].get(v.name)
        if nested is None or v.name not in t.options:
            raise _Fail(f"'{v.name}(...)' is not allowed for '{param.name}'", v.pos,
                        _did_you_mean(v.name, t.options) or f"expected {t.describe()}")
        params, _ = self._check_args(v, nested, param.name)
        if params is None:
            raise _Fail("", None)
        return Nested(v.name, params, v.pos)

    def _any_json(self, v: ast.Value, t: Type, param: Param) -> Any:
        return self._json(v)

    _TYPED = {"union": _union, "none": _none, "int": _number, "float": _number, "bool": _bool, "str": _str,
              "path": _path, "strs": _strs, "enum": _enum, "ref": _one_ref, "refs": _refs, "data": _data,
              "split": _split, "fractions": _fractions, "call": _call, "json": _any_json}

    def _json(self, v: ast.Value) -> Any:
        if isinstance(v, (ast.Number, ast.String, ast.Bool)):
            return v.value
        if isinstance(v, ast.NoneLit):
            return None
        if isinstance(v, ast.Ref):
            return v.dotted
        if isinstance(v, ast.ListLit):
            return [self._json(i) for i in v.items]
        if isinstance(v, ast.DictLit):
            return {k: self._json(i) for k, i in v.items}
        raise _Fail("a call or search is not allowed here", v.pos)

    def _bounds(self, num: float, t: Type, param: Param, pos: ast.Pos) -> None:
        if t.min is not None and (num < t.min or (t.min_open and num == t.min)):
            rel = "above" if t.min_open else "at least"
            raise _Fail(f"'{param.name}' must be {rel} {t.min:g}, got {num:g}", pos, param.doc)
        if t.max is not None and num > t.max:
            raise _Fail(f"'{param.name}' must be at most {t.max:g}, got {num:g}", pos, param.doc)

    def _ref(self, v: ast.Ref, kinds: tuple[str, ...]) -> Link:
        name = v.parts[0]
        d = self.decls.get(name)
        if d is not None and not (d.kind not in kinds and "template" in kinds and name in BUILTIN_TEMPLATES):
            if d.kind not in kinds:
                raise _Fail(f"'{name}' is a {d.kind}, expected a {'/'.join(kinds)}", v.pos)
            return Link(d.kind, name)
        if "template" in kinds and name in BUILTIN_TEMPLATES:
            return Link("template", name)
        options = [n for n, dd in self.decls.items() if dd.kind in kinds]
        if "template" in kinds:
            options += list(BUILTIN_TEMPLATES)
        hint = _did_you_mean(name, options) or (f"declared {'/'.join(kinds)}s: {', '.join(options)}" if options
                                                  else f"declare it: {kinds[0]} {name} = ...")
        raise _Fail(f"unknown {'/'.join(kinds)} '{name}'", v.pos, hint)

    # ---- whole-program rules
    def _check_program(self) -> None:
        prog = self.program
        flows = [d for d in prog.decls if d.kind == "flow"]
        if not flows:
            self.error("the program has no flow", None,
                       "add: flow main = loop(data, generator = g, prompter = p, evaluator = e)")
            return
        for extra in flows[1:]:
            self.error("a program has exactly one flow", extra.pos, f"the first is on line {flows[0].pos.line}")
        for extra in [d for d in prog.decls if d.kind == "optimize"][1:]:
            self.error("a program has at most one optimize declaration", extra.pos)
        for d in self.out.values():
            self._check_splits(d)
        self._check_flow(self.out[flows[0].name])
        for d in self.out.values():
            prefixes = (f"_rule_{d.kind}", f"_rule_{d.kind}_{d.ctor}")
            for rule_name in sorted(n for n in dir(self) if n == prefixes[0] or n == prefixes[1]
                                    or n.startswith(prefixes[1] + "_")):
                getattr(self, rule_name)(d)
        self._check_capabilities(self.out[flows[0].name])
        used = self._used_names()
        for d in prog.decls:
            if d.name not in used and d.kind not in ("flow", "optimize"):
                self.warnings.append(Diagnostic(f"{d.kind} '{d.name}' is declared but never used", d.name_pos))

    def _data_splits(self, data: str) -> tuple[str, ...] | None:
        split = self.out[data].params["split"]
        return tuple(split) if isinstance(split, dict) else None

    def _check_splits(self, d: CheckedDecl) -> None:
        for name, value in _walk(d.params):
            if isinstance(value, SplitLink):
                names = self._data_splits(value.data)
                if names is not None and value.split not in names:
                    self.error(f"data '{value.data}' has no split '{value.split}'", d.param_pos.get(name, d.pos),
                               _did_you_mean(value.split, names) or f"its splits: {', '.join(names)}")
                is_report = d.kind == "optimize" and name == "report"
                if value.split == HELD_OUT and not is_report:
                    self.error(f"'{name}' of {d.kind} '{d.name}' uses the held-out split {value.data}.{HELD_OUT}",
                               d.param_pos.get(name, d.pos),
                               "held-out data is only for the final report; use train or dev here")

    def _check_flow(self, f: CheckedDecl) -> None:
        p = f.params
        pos = f.param_pos
        select = p["select"]
        needs_reward = {_key(s) for s in options_of(select)} & {"argmax", "weighted_vote"}
        rewards = [r for r in options_of(p["reward"]) if r is not None]
        if needs_reward and len(rewards) < len(options_of(p["reward"])):
            self.error(f"select = {sorted(needs_reward)[0]} needs a reward", pos.get("select", f.pos),
                       "add reward = NAME, or select = first / majority")
        for r in rewards:
            if self.out[r.name].ctor == "binary":
                self.error(f"'{r.name}' is a binary reward model: it chooses prompts, it does not score candidates",
                           pos.get("reward", f.pos), f"use template = per_query({r.name}) in the prompter instead")
        max_rounds = max(options_of(p["rounds"], high=True))
        prompter = self.out.get(_key(p["prompter"])) if not isinstance(p["prompter"], SearchVal) else None
        if max_rounds > 1 and prompter is not None and prompter.params["followup"] is None:
            self.error("rounds > 1 needs a followup in the prompter", pos.get("rounds", f.pos),
                       f"set followup = feedback (or continue) in prompter '{prompter.name}'")
        max_keep = max(options_of(p["keep"], high=True))
        if max_keep > 1 and max_rounds == 1:
            self.warnings.append(Diagnostic("keep > 1 has no effect with rounds = 1", pos.get("keep")))

    def _check_model(self, d: CheckedDecl, param: str) -> None:
        """Every model ``param`` may name points at weights on this machine (loads nothing)."""
        from aldsl.backends.base import ModelNotFound
        from aldsl.backends.registry import check_model

        for name in options_of(d.params[param]):
            try:
                check_model(name)
            except ModelNotFound as e:
                first, _, rest = str(e).partition("\n")
                self.error(f"{d.kind} '{d.name}': {first}", d.param_pos.get(param, d.pos),
                           "; ".join(line.strip(" -") for line in rest.splitlines()))

    def _rule_generator_model(self, d: CheckedDecl) -> None:
        if d.params["backend"] == "openai":
            self._check_server(d)
            return
        given = [k for k in SERVER_PARAMS if k in d.param_pos]
        if given:
            self.error(f"'{given[0]}' of generator '{d.name}' is for backend = openai, not {d.params['backend']}",
                       d.param_pos[given[0]], "add backend = openai (a model behind a server), or remove it")
        self._check_model(d, "name")
        self._check_adapter(d)

    def _check_adapter(self, d: CheckedDecl) -> None:
        adapter = d.params.get("adapter")
        if adapter is None:
            return
        where = d.param_pos.get("adapter", d.pos)
        if d.params.get("finetune") is not None:
            self.error(f"generator '{d.name}': adapter and finetune both choose the weights", where,
                       "keep one: adapter = a folder trained before, or finetune = a fine-tuning this program trains")
        elif not (Path(adapter).expanduser() / "adapter_config.json").is_file():
            self.error(f"generator '{d.name}': adapter {adapter!r} is not a PEFT adapter folder (no "
                       "adapter_config.json there)", where,
                       "name the folder that save_pretrained() of a PEFT model wrote; a fully fine-tuned model folder "
                       "is named as the model itself: model(\"path/to/folder\")")

    def _rule_generator_model_device(self, d: CheckedDecl) -> None:
        device = d.params["device"]
        if not _DEVICE.fullmatch(device):
            self.error(f"generator '{d.name}': device {device!r} is not one of auto, cpu, cuda, cuda:N, mps",
                       d.param_pos.get("device", d.pos), 'e.g. device = "cuda:0", or leave it out (auto)')

    def _rule_generator_model_stop(self, d: CheckedDecl) -> None:
        if any(s == "" for s in d.params["stop"]):
            self.error(f"generator '{d.name}': an empty stop string would stop before the first token",
                       d.param_pos.get("stop", d.pos), 'remove "" from stop')

    def _rule_data(self, d: CheckedDecl) -> None:
        path = Path(d.params["path"])
        if d.ctor in ("jsonl", "csv") and path.is_dir():
            self.error(f"data '{d.name}': {path} is a folder, {d.ctor}() reads one file",
                       d.param_pos.get("path", d.pos), "name the file inside it, or use hf_disk() for a "
                       "dataset saved with save_to_disk")
        elif d.ctor == "hf_disk" and path.is_file():
            self.error(f"data '{d.name}': {path} is a file, hf_disk() reads the folder save_to_disk wrote",
                       d.param_pos.get("path", d.pos), "use jsonl() or csv() for a single file")

    def _rule_flow_loop_answer(self, d: CheckedDecl) -> None:
        for answer in options_of(d.params["answer"]):
            if isinstance(answer, Nested) and answer.ctor == "regex":
                self._regex(answer.params["pattern"], answer.pos, "answer = regex(...)")
            elif isinstance(answer, Nested) and answer.ctor == "choice" and not answer.params["options"]:
                self.error("answer = choice([]) has no options", answer.pos, 'list them, e.g. choice(["yes", "no"])')

    def _rule_evaluator_regex(self, d: CheckedDecl) -> None:
        self._regex(d.params["pattern"], d.param_pos.get("pattern", d.pos), f"evaluator '{d.name}'")

    def _regex(self, pattern: str, pos: ast.Pos | None, where: str) -> None:
        try:
            re.compile(pattern)
        except re.error as e:
            self.error(f"{where}: invalid regular expression {pattern!r}: {e}", pos,
                       "escape special characters with a backslash, e.g. \\[ for a literal [")

    def _rule_template(self, d: CheckedDecl) -> None:
        """Slots every template may use; record fields are known only when the data is readable."""
        fields = self._record_fields()
        if fields is None:
            return
        allowed = fields | {"x", "demos", "history", "candidate", "demo", "y", "id"}
        for key in ("body", "demo", "system", "prefill"):
            text = d.params.get(key)
            for slot in slots(text) if isinstance(text, str) else []:
                if slot not in allowed:
                    self.error(f"template '{d.name}': the slot {{{slot}}} is neither a record field nor one of "
                               "{x}, {demos}, {history}, {candidate}", d.param_pos.get(key, d.pos),
                               _did_you_mean(slot, sorted(allowed)) or
                               f"record fields: {', '.join(sorted(fields))}")

    def _record_fields(self) -> set[str] | None:
        """The fields of the first record of every jsonl/csv data source (None if unreadable)."""
        from aldsl.store.data import first_record_fields

        fields: set[str] = set()
        for d in self.of_kind("data"):
            found = first_record_fields(d.ctor, d.params["path"])
            if found is None:
                return None
            fields |= found
        return fields

    def of_kind(self, kind: str) -> list[CheckedDecl]:
        return [d for d in self.out.values() if d.kind == kind]

    def _check_server(self, d: CheckedDecl) -> None:
        """backend = openai: a base_url, and an api_key_env that names a variable (not a key)."""
        url, env, pos = d.params["base_url"], d.params["api_key_env"], d.param_pos
        if url is None:
            self.error(f"generator '{d.name}' has backend = openai but no base_url", pos.get("backend", d.pos),
                       'add base_url = "http://HOST:PORT/v1" (the server\'s OpenAI-compatible API root)')
        elif not re.match(r"https?://[^/\s]+", url):
            self.error(f"base_url of generator '{d.name}' is not an http(s) URL", pos["base_url"],
                       'e.g. base_url = "http://127.0.0.1:8000/v1"')
        if env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env):  # the value is not echoed: a key?
            self.error(f"api_key_env of generator '{d.name}' must name an environment variable", pos["api_key_env"],
                       'write api_key_env = "OPENAI_API_KEY" and export the key in that variable; never put the '
                       "key itself in a program")
        local = [k for k in ("device", "dtype") if k in pos]
        if local:
            self.warnings.append(Diagnostic(f"'{local[0]}' has no effect with backend = openai (the server "
                                            "chooses it)", pos[local[0]]))

    def _check_capabilities(self, flow: CheckedDecl) -> None:
        """Refuse what needs a capability the generator's backend lacks (hidden states, local weights),
        saying what to use instead, at the value that asks for it."""
        from aldsl.backends.base import CAPABILITIES, INSTEAD

        def lacks(generator: Any, capability: str) -> str | None:
            """The backend of the first of the generator's options that lacks ``capability``."""
            for link in options_of(generator):
                g = self.out.get(link.name) if isinstance(link, Link) else None
                if g is not None and g.ctor == "model" and capability not in CAPABILITIES[g.params["backend"]]:
                    return f"generator '{g.name}' (backend = {g.params['backend']})"
            return None

        flow_generator = flow.params["generator"]
        for d in self.out.values():
            if d.kind == "generator" and d.ctor == "model":
                if any(v is not None for v in options_of(d.params["finetune"])) and \
                        "weights" not in CAPABILITIES[d.params["backend"]]:
                    self.error(f"generator '{d.name}' (backend = {d.params['backend']}) cannot be fine-tuned: "
                               "fine-tuning theta trains local weights", d.param_pos.get("finetune", d.pos),
                               INSTEAD["weights"])
            generator = d.params.get("generator")
            generator = flow_generator if generator is None else generator
            if d.kind == "finetune" and d.params["generator"] is not None:
                who = lacks(d.params["generator"], "weights")
                if who:
                    self.error(f"finetune '{d.name}' trains {who}, which has no local weights",
                               d.param_pos.get("generator", d.pos), INSTEAD["weights"])
            tunes = {t for t in options_of(d.params.get("tune", "head"))}
            if d.kind == "reward" and tunes - {"head"} and d.params.get("backbone") is None:
                who = lacks(generator, "weights")
                if who:
                    self.error(f"reward '{d.name}' with tune = {sorted(tunes - {'head'})[0]} trains an LM reward on the "
                               f"weights of {who}, which has no local weights", d.param_pos.get("tune", d.pos),
                               'give it backbone = "..." (an embedded name, a local HF folder or a .gguf file), or '
                               "use tune = head with features = minilm")
            if d.kind == "reward" and "features" in d.params and "head" in tunes and \
                    any(f == "hidden" for f in options_of(d.params["features"])):
                who = lacks(generator, "encode")
                if who:
                    self.error(f"reward '{d.name}' uses features = hidden, the hidden states of {who}, which that "
                               "backend does not expose", d.param_pos.get("features", d.pos), INSTEAD["encode"])
            if d.kind == "reward" and d.ctor == "discriminator" and \
                    any(v == "sft" for v in options_of(d.params["positives"])):
                who = lacks(generator, "weights")
                if who:
                    self.error(f"reward '{d.name}' has positives = sft, which fine-tunes {who}; it has no local "
                               "weights", d.param_pos.get("positives", d.pos),
                               "use positives = demos, or " + INSTEAD["weights"])

    def _rule_reward(self, d: CheckedDecl) -> None:
        if d.params.get("backbone") is not None:
            self._check_model(d, "backbone")
        if "generative" in options_of(d.params.get("verifier", "value")):
            self._check_generative(d)
        if d.ctor != "external":
            return
        if (d.params["call"] is None) == (d.params["command"] is None):
            self.error("external() needs exactly one of call = \"module:function\" or command = \"...\"", d.pos)
            return
        from aldsl.isolation.external import ExternalError, ExternalSpec, check_external_static

        key = "call" if d.params["call"] is not None else "command"
        try:
            check_external_static(ExternalSpec(call=d.params["call"], command=d.params["command"],
                                               base_dir=str(self.base_dir)))
        except ExternalError as e:
            self.error(f"{d.kind} '{d.name}': {e}", d.param_pos.get(key, d.pos))

    _rule_evaluator = _rule_reward

    def _check_generative(self, d: CheckedDecl) -> None:
        """verifier = generative reads the LM's answer after the whole text: it needs an LM and one value per text."""
        where = d.param_pos.get("verifier", d.pos)
        if "head" in options_of(d.params.get("tune", "head")):
            self.error(f"reward '{d.name}': verifier = generative answers with an LM, and tune = head trains a small "
                       "head on frozen features instead", where, "add tune = top (or lora, or full)")
        elif d.ctor == "process":
            self.error(f"reward '{d.name}': a process reward scores every step, and verifier = generative asks one "
                       "question after the whole text", where, "use verifier = value for a process reward")
        elif "tokens" in options_of(d.params.get("value", "last")):
            self.error(f"reward '{d.name}': value = tokens puts the loss on every answer token, and verifier = "
                       "generative reads one answer after the text", where, "use value = last with verifier = generative")

    def _rule_prompter(self, d: CheckedDecl) -> None:
        for t in options_of(d.params["template"]):
            if isinstance(t, Nested) and t.ctor == "per_query":
                r = self.out.get(t.params["reward"].name)
                if r is not None and r.ctor != "binary":
                    self.error(f"per_query needs a binary reward model, '{r.name}' is {r.ctor}", t.pos)

    def _rule_finetune(self, d: CheckedDecl) -> None:
        if d.params.get("rationalize") and d.params.get("reward") is not None:
            self.error(f"rejection() with rationalize = true keeps rationales the golden check passes; '{d.name}' "
                       "ranks by a reward instead", d.param_pos.get("rationalize", d.pos),
                       "set reward = none (the golden evaluator), or rationalize = false")
        data = d.params.get("data")
        if "arithmetic" in options_of(d.params.get("solutions", "demo")) and isinstance(data, SplitLink) \
                and self.out[data.data].params.get("target") is None:
            self.error(f"sft() with solutions = arithmetic derives worked solutions from golden answers, and data "
                       f"'{data.data}' has no target field", d.param_pos.get("solutions", d.pos),
                       f"set target = \"<answer field>\" in data '{data.data}', or solutions = demo")
        if d.ctor == "iterative":
            r = self.out[d.params["reward"].name]
            if r.ctor not in TRAINED_REWARDS or r.ctor == "binary":
                self.error(f"iterative() refits its reward each round; '{r.name}' ({r.ctor}) is not trainable",
                           d.param_pos.get("reward", d.pos), "use outcome, process, discriminator or bradley_terry")

    def _rule_reward_implicit(self, d: CheckedDecl) -> None:
        f = self.out.get(d.params["finetune"].name)
        if f is not None and f.ctor != "dpo":
            self.error(f"implicit() reads the implicit reward of a DPO fine-tuning; '{f.name}' is {f.ctor}",
                       d.param_pos.get("finetune", d.pos), f"declare it as finetune {f.name} = dpo(...)")

    def _rule_reward_binary(self, d: CheckedDecl) -> None:
        if len(d.params["among"]) < 2:
            self.error("binary() chooses between prompts: among needs at least two templates",
                       d.param_pos.get("among", d.pos))

    def _rule_optimize(self, d: CheckedDecl) -> None:
        flow = self.out[next(x.name for x in self.program.decls if x.kind == "flow")]
        evals = flow.params["evaluator"]
        names = [e.name for e in (evals if isinstance(evals, list) else [evals])]
        if d.params["objective"].name not in names:
            self.error(f"the objective '{d.params['objective'].name}' is not an evaluator of the flow",
                       d.param_pos.get("objective", d.pos), f"the flow evaluates: {', '.join(names)}")
        for key in ("on", "report"):
            s = d.params.get(key)
            if isinstance(s, SplitLink) and s.data != flow.params["data"].name:
                self.error(f"'{key}' must be a split of the flow's data '{flow.params['data'].name}'",
                           d.param_pos.get(key, d.pos))
        if d.ctor == "oirl":
            r = self.out.get(d.params["reward"].name)
            if r is not None and r.ctor != "binary":
                self.error(f"oirl needs a binary reward model, '{r.name}' is {r.ctor}", d.param_pos.get("reward"))

    def _used_names(self) -> set[str]:
        used: set[str] = set()
        for d in self.out.values():
            for _, value in _walk(d.params):
                if isinstance(value, Link):
                    used.add(value.name)
                elif isinstance(value, SplitLink):
                    used.add(value.data)
        return used


def to_json_value(value: Any) -> Any:
    """A checked value as JSON: references become their names, nested calls ``ctor(arg)``."""
    if isinstance(value, Link):
        return value.name
    if isinstance(value, SplitLink):
        return f"{value.data}.{value.split}"
    if isinstance(value, Nested):
        first = next(iter(value.params.values()), "")
        return f"{value.ctor}({to_json_value(first)})"
    return value


def _key(value: Any) -> str:
    """A printable, comparable key for a checked value, as it reads in a program."""
    return alp_text(to_json_value(value), words=True)


def options_of(value: Any, high: bool = False) -> list[Any]:
    """The possible values of a parameter: its choices, its range ends (high=True), or itself."""
    if isinstance(value, SearchVal):
        if value.choices is not None:
            return list(value.choices)
        return [value.low, value.high] if high else [value.default]
    return [value]


def _walk(params: dict[str, Any], prefix: str = ""):
    """Yield (top-level param name, value) for every value, looking into searches, lists and nested calls."""
    for name, value in params.items():
        top = prefix or name
        stack = [value]
        while stack:
            v = stack.pop()
            yield top, v
            if isinstance(v, SearchVal):
                stack.extend([v.default, *(v.choices or ())])
            elif isinstance(v, Nested):
                stack.extend(v.params.values())
            elif isinstance(v, list):
                stack.extend(v)


def check(program: ast.Program) -> Checked:
    """Check a parsed program; raises AlpError listing every problem found."""
    return Checker(program).run()
