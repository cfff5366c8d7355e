"""``--set DECL.PARAM=VALUE`` for parameters that are not searched: rewrite the program's AST.

The new value replaces the argument (or is added when the program leaves it at its default);
the program is then checked again, so an override obeys every rule a written value does.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any, Mapping

from aldsl.language import ast
from aldsl.errors import UserError
from aldsl.language.schema import BY_KIND, Constructor, Param, Type

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def _admits_names(t: Type) -> bool:
    if t.kind == "union":
        return any(_admits_names(o) for o in t.options)
    return t.kind in ("ref", "refs", "enum", "data", "split")


def _literal(value: Any, t: Type, pos: ast.Pos) -> ast.Value:
    if value is None:
        return ast.NoneLit(pos)
    if isinstance(value, bool):
        return ast.Bool(value, pos)
    if isinstance(value, (int, float)):
        return ast.Number(value, pos)
    if isinstance(value, str):
        if _admits_names(t) and _IDENT.match(value):
            return ast.Ref(tuple(value.split(".")), pos)
        return ast.String(value, pos)
    if isinstance(value, list):
        return ast.ListLit(tuple(_literal(v, t, pos) for v in value), pos)
    raise UserError(f"--set: cannot use {value!r} as a program value")


def _param(ctor: Constructor, name: str, where: str) -> Param:
    p = ctor.param(name)
    if p is None:
        names = [q.name for q in ctor.params]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"its parameters: {', '.join(names)}"
        raise UserError(f"--set {where}: {ctor.name}() has no parameter '{name}'; {hint}")
    return p


def arg_index(call: ast.Call, ctor: Constructor, name: str) -> int | None:
    """Where ``call`` passes parameter ``name`` (by keyword or by position), or None."""
    positional = [p.name for p in ctor.params if p.positional]
    return next((i for i, a in enumerate(call.args) if a.key == name or
                 (a.key is None and i < len(positional) and positional[i] == name)), None)


def _set_arg(call: ast.Call, ctor: Constructor, path: list[str], value: Any, where: str) -> ast.Call:
    param = _param(ctor, path[0], where)
    args = list(call.args)
    index = arg_index(call, ctor, param.name)
    if len(path) > 1:
        if index is None or not isinstance(args[index].value, ast.Call):
            raise UserError(f"--set {where}: '{path[0]}' is not a call in the program, so it has no '{path[1]}'")
        inner = args[index].value
        nested = BY_KIND["nested"].get(inner.name)
        if nested is None:
            raise UserError(f"--set {where}: '{inner.name}(...)' has no parameters to set")
        new_value: ast.Value = _set_arg(inner, nested, path[1:], value, where)
    else:
        new_value = _literal(value, param.type, call.pos)
    if index is None:
        args.append(ast.Arg(param.name, new_value, call.pos))
    else:
        args[index] = dataclasses.replace(args[index], value=new_value)
    return dataclasses.replace(call, args=tuple(args))


def apply_overrides(program: ast.Program, overrides: Mapping[str, Any]) -> ast.Program:
    """The program with each ``decl.param[.sub]`` set to a value (JSON-like: numbers, strings, names)."""
    decls = {d.name: d for d in program.decls}
    for where, value in overrides.items():
        name, _, rest = where.partition(".")
        if name not in decls or not rest:
            raise UserError(f"--set {where}: no declaration '{name}' with a parameter; write --set DECL.PARAM=VALUE "
                            f"(declarations: {', '.join(decls)})")
        d = decls[name]
        ctor = BY_KIND[d.kind].get(d.call.name)
        if ctor is None:
            raise UserError(f"--set {where}: unknown {d.kind} constructor '{d.call.name}'")
        decls[name] = dataclasses.replace(d, call=_set_arg(d.call, ctor, rest.split("."), value, where))
    return dataclasses.replace(program, decls=tuple(decls[d.name] for d in program.decls))
