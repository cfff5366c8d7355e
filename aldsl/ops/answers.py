"""Answer extraction: turn a generated text into the answer an evaluator or reward compares.

``extract(kind, text, arg)`` is the one entry point; ``KINDS`` lists the kinds:

- ``text``: the whole text, stripped.
- ``number``: the final answer number, normalised ("1,000" -> "1000", "8.0" -> "8").
  A number right after an answer marker ("answer is", "answer:", "####") wins (the last
  such marker); else the number after the last "=" on the last line that has a number;
  else the last number in the text; "" if there is none.
- ``line``: the first non-empty line, stripped.
- ``code``: the body of the first ```-fenced block (language tag optional; a fence left
  open by a truncated generation runs to the end), else the whole text stripped.
- ``json``: the first JSON object in the text, re-serialised canonically (sorted keys,
  compact separators), "" if none.
- ``regex``: ``arg`` is a pattern; group 1 if it has groups else the whole match, "" if none.
- ``choice``: ``arg`` is a list of options; the option occurring earliest in the text as a
  whole word (case-insensitive; the longest on a tie), returned as written in ``arg``, "" if none.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Callable, Sequence

_NUMBER = r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\d])"
_NUMBER_RE = re.compile(_NUMBER)
_GROUPED_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_MARKER_RE = re.compile(
    r"(?:answer\s*(?:is|:|=)|####)[\s:=*$]*(" + _NUMBER + ")", re.IGNORECASE
)
_EQUALS_RE = re.compile(r"=[\s*$]*(" + _NUMBER + ")")
_FENCE_RE = re.compile(r"```(?:[\w+#.-]*[ \t]*\n)?(.*?)```", re.DOTALL)
_OPEN_FENCE_RE = re.compile(r"```(?:[\w+#.-]*[ \t]*\n)?(.*)\Z", re.DOTALL)


def normalize_number(s: str) -> str | None:
    """Canonical form of a number string ("1,000" -> "1000", "8.0" -> "8", "$2.50" -> "2.5").

    Returns None when ``s`` is not a single finite number.
    """
    cleaned = s.strip().lstrip("$").strip()
    if "," in cleaned:
        if not _GROUPED_RE.fullmatch(cleaned):
            return None
        cleaned = cleaned.replace(",", "")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _number(text: str, arg: object) -> str:
    markers = list(_MARKER_RE.finditer(text))
    if markers:
        return normalize_number(markers[-1].group(1)) or ""
    lines = [line for line in text.splitlines() if _NUMBER_RE.search(line)]
    if not lines:
        return ""
    last_line = lines[-1]
    equals = list(_EQUALS_RE.finditer(last_line))
    found = equals[-1].group(1) if equals else _NUMBER_RE.findall(last_line)[-1]
    return normalize_number(found) or ""


def _text(text: str, arg: object) -> str:
    return text.strip()


def _line(text: str, arg: object) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _code(text: str, arg: object) -> str:
    match = _FENCE_RE.search(text) or _OPEN_FENCE_RE.search(text)
    return match.group(1).strip("\n") if match else text.strip()


def _json(text: str, arg: object) -> str:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return ""


def _regex(text: str, arg: object) -> str:
    if not isinstance(arg, str) or not arg:
        raise ValueError("answer kind 'regex' needs a pattern string, e.g. extract('regex', text, r'(\\d+)')")
    try:
        pattern = re.compile(arg)
    except re.error as exc:
        raise ValueError(f"invalid regex pattern {arg!r} for answer kind 'regex': {exc}") from None
    match = pattern.search(text)
    if match is None:
        return ""
    return match.group(1) if pattern.groups else match.group(0)


def _choice(text: str, arg: object) -> str:
    if isinstance(arg, str) or not isinstance(arg, Sequence) or not arg:
        raise ValueError("answer kind 'choice' needs a non-empty list of options, e.g. ['yes', 'no']")
    best: tuple[int, int, str] | None = None
    for option in arg:
        option = str(option)
        match = re.search(rf"(?<!\w){re.escape(option)}(?!\w)", text, re.IGNORECASE)
        if match and (best is None or (match.start(), -len(option)) < best[:2]):
            best = (match.start(), -len(option), option)
    return best[2] if best else ""


_EXTRACTORS: dict[str, Callable[[str, object], str]] = {
    "text": _text,
    "number": _number,
    "line": _line,
    "code": _code,
    "json": _json,
    "regex": _regex,
    "choice": _choice,
}

KINDS: tuple[str, ...] = tuple(_EXTRACTORS)


def extract(kind: str, text: str, arg: object = None) -> str:
    """The answer of kind ``kind`` in ``text`` ("" when there is none); see the module doc."""
    try:
        extractor = _EXTRACTORS[kind]
    except KeyError:
        raise ValueError(f"unknown answer kind {kind!r}; valid kinds: {', '.join(KINDS)}") from None
    return extractor(text, arg)
