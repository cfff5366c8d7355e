"""Write a program back with searched values pinned: the optimizer's ``optimized.alp``."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from . import ast
from .check import Checked, Nested, SearchVal
from .space import to_json_value


def _offset(source: str, line: int, col: int) -> int:
    lines = source.split("\n")
    return sum(len(l) + 1 for l in lines[: line - 1]) + col - 1


def _slice(source: str, pos: ast.Pos) -> str:
    return source[_offset(source, pos.line, pos.col):_offset(source, pos.end_line, pos.end_col)]


def _searches(checked: Checked) -> Iterator[tuple[str, SearchVal]]:
    def visit(prefix: str, params: Mapping[str, Any]) -> Iterator[tuple[str, SearchVal]]:
        for pname, value in params.items():
            if isinstance(value, SearchVal):
                yield f"{prefix}.{pname}", value
            elif isinstance(value, Nested):
                yield from visit(f"{prefix}.{pname}", value.params)

    for d in checked.decls.values():
        yield from visit(d.name, d.params)


def _literal(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6)) if abs(value) >= 1e-4 else f"{value:.6g}"
    return str(value)


def pin_source(checked: Checked, values: Mapping[str, Any], replace: Mapping[str, str] | None = None) -> str:
    """The source text with every search ``default in domain`` replaced by its value in ``values``
    (defaults where absent); ``replace`` maps search names to raw .alp text to put there instead
    (e.g. ``per_query(success)``). Comments and layout are kept."""
    source = checked.program.source
    edits: list[tuple[int, int, str]] = []
    for name, s in _searches(checked):
        assert s.pos is not None
        if replace and name in replace:
            text = replace[name]
        else:
            chosen = values.get(name, to_json_value(s.default))
            if s.choices is not None:
                index = next(i for i, c in enumerate(s.choices) if to_json_value(c) == chosen)
                text = _slice(source, s.option_pos[index])
            else:
                text = _literal(chosen)
        edits.append((_offset(source, s.pos.line, s.pos.col), _offset(source, s.pos.end_line, s.pos.end_col), text))
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source
