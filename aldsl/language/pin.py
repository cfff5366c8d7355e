"""Write a program back with searched values pinned: the optimizer's ``optimized.alp``."""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

from aldsl.language import ast
from aldsl.language.check import Checked, Link, Nested, SearchVal
from aldsl.language.schema import TRAINED_REWARDS
from aldsl.language.space import to_json_value
from aldsl.language.text import alp_text, node_text


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


def _override_edits(program: ast.Program, overrides: Mapping[str, Any]) -> list[tuple[int, int, str]]:
    """Text edits that write ``--set`` overrides (``decl.param[.sub]``) into the source."""
    from aldsl.language.overrides import apply_overrides, arg_index
    from aldsl.language.schema import BY_KIND

    source = program.source
    edits = []
    decls = {d.name: d for d in program.decls}
    new = {d.name: d for d in apply_overrides(program, overrides).decls}
    for where in overrides:
        name, *path = where.split(".")
        old_call, new_call = decls[name].call, new[name].call
        ctor = BY_KIND[decls[name].kind][old_call.name]
        while True:
            key = path[0]
            index = arg_index(old_call, ctor, key)  # overrides replace an argument in place or append it
            old_arg = None if index is None else old_call.args[index]
            new_arg = new_call.args[index] if index is not None else \
                next(a for a in new_call.args[len(old_call.args):] if a.key == key)
            if len(path) > 1 and old_arg is not None:
                old_call, new_call, path = old_arg.value, new_arg.value, path[1:]  # type: ignore[assignment]
                ctor = BY_KIND["nested"][old_call.name]
                continue
            text = node_text(new_arg.value)
            if old_arg is None:
                at = _offset(source, old_call.pos.end_line, old_call.pos.end_col) - 1  # before ")"
                sep = ", " if old_call.args else ""
                edits.append((at, at, f"{sep}{key} = {text}"))
            else:
                v = old_arg.value.pos
                edits.append((_offset(source, v.line, v.col), _offset(source, v.end_line, v.end_col), text))
            break
    return edits


def pin_source(checked: Checked, values: Mapping[str, Any], replace: Mapping[str, str] | None = None) -> str:
    """The source text with every search ``default in domain`` replaced by its value in ``values``
    (defaults where absent) and the program's ``--set`` overrides written in; ``replace`` maps search
    names to raw .alp text to put there instead (e.g. ``per_query(success)``). Comments and layout
    are kept.

    Trained rewards, critics and fine-tunings take the flow's generator and prompter *at their
    defaults*. Where the pinned values change those declarations, the text keeps a copy of each at its
    defaults (``g_search``) and points those resources at it, so the written program trains exactly
    the resources its search used (and finds them in the shipped artifacts)."""
    overrides = dict(checked.overrides)
    inserts = _search_copies(checked, values, replace or {}, overrides)
    return _pinned(checked, values, replace or {}, overrides, inserts)


def _pinned(checked: Checked, values: Mapping[str, Any], replace: Mapping[str, str], overrides: Mapping[str, Any],
            inserts: list[tuple[int, int, str]]) -> str:
    source = checked.program.source
    edits = _override_edits(checked.program, overrides) + inserts
    for name, s in _searches(checked):
        assert s.pos is not None
        if name in replace:
            text = replace[name]
        else:
            chosen = values.get(name, to_json_value(s.default))
            if s.choices is not None:
                index = next(i for i, c in enumerate(s.choices) if to_json_value(c) == chosen)
                text = _slice(source, s.option_pos[index])
            else:
                text = alp_text(chosen)
        edits.append((_offset(source, s.pos.line, s.pos.col), _offset(source, s.pos.end_line, s.pos.end_col), text))
    for start, end, text in sorted(edits, reverse=True):
        source = source[:start] + text + source[end:]
    return source


def _search_copies(checked: Checked, values: Mapping[str, Any], replace: Mapping[str, str],
                   overrides: dict[str, Any]) -> list[tuple[int, int, str]]:
    """Insertions of ``NAME_search`` copies (at the defaults) of the flow's generator and prompter where
    pinning changes them and a resource takes them by default; adds ``RESOURCE.param = copy`` to
    ``overrides``."""
    from aldsl.language.parser import parse

    searches = dict(_searches(checked))
    inserts: list[tuple[int, int, str]] = []
    at_defaults: ast.Program | None = None
    for param in ("generator", "prompter"):
        link = checked.flow.params.get(param)
        if not isinstance(link, Link):
            continue
        name = link.name
        if not any(n.startswith(f"{name}.") and (n in replace or values.get(n, to_json_value(s.default))
                                                  != to_json_value(s.default)) for n, s in searches.items()):
            continue
        users = [d.name for d in checked.decls.values() if _takes_flow_default(checked, d, param, name)
                 and f"{d.name}.{param}" not in overrides]
        if not users:
            continue
        if at_defaults is None:
            at_defaults = parse(_pinned(checked, {}, {}, checked.overrides, []))
        copy = next(c for c in (f"{name}_search{i or ''}" for i in range(100)) if c not in checked.decls)
        decl = next(d for d in at_defaults.decls if d.name == name)
        text = re.sub(rf"^(\w+\s+){re.escape(name)}\b", rf"\g<1>{copy}", _slice(at_defaults.source, decl.pos), count=1)
        end = checked.decls[name].pos
        at = _offset(checked.program.source, end.end_line, end.end_col)
        inserts.append((at, at, f"\n{text}  # {param} of the resources, as the search trained them"))
        overrides.update({f"{user}.{param}": copy for user in users})
    return inserts


def _takes_flow_default(checked: Checked, d: Any, param: str, flow_value: str) -> bool:
    """Whether declaration ``d`` is a resource that takes the flow's ``param`` by default."""
    if isinstance(d.params.get(param), Link):
        return False
    if d.kind == "reward":
        return d.ctor in TRAINED_REWARDS or (d.ctor == "critic" and param == "generator")
    if d.kind != "finetune":
        return False
    # a fine-tuning trains on the flow's prompter as pinned (theta and psi coupled), so only its generator
    # keeps the defaults
    return param == "generator" and checked.generator_of(d.name) == flow_value
