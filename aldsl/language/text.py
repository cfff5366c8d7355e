"""Values as .alp source text: the one renderer behind error messages, the language reference,
``optimized.alp`` and ``--set`` edits."""

from __future__ import annotations

import json
import re
from typing import Any

from aldsl.language import ast

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def alp_text(value: Any, *, words: bool = False) -> str:
    """``value`` as it is written in a program: ``none``, ``true``/``false``, numbers (floats to six
    significant places, as ``optimized.alp`` pins them), strings in double quotes, lists and dicts.
    ``words``: a string that is a name (a reference or an enum value) is written bare."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6)) if abs(value) >= 1e-4 else f"{value:.6g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value if words and _WORD.match(value) else json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(alp_text(v, words=words) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {alp_text(v, words=words)}" for k, v in value.items()) + "}"
    return str(value)


def node_text(v: ast.Value) -> str:
    """A literal AST value (strings, names, numbers, lists) as source text."""
    if isinstance(v, ast.Ref):
        return v.dotted
    if isinstance(v, ast.ListLit):
        return "[" + ", ".join(node_text(i) for i in v.items) + "]"
    if isinstance(v, ast.NoneLit):
        return alp_text(None)
    if isinstance(v, (ast.String, ast.Bool, ast.Number)):
        return alp_text(v.value)
    raise ValueError(f"cannot write {v!r} as program text")
