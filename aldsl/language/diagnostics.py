"""Problems in a .alp program: each with file:line:col, the line and a caret."""

from __future__ import annotations

from dataclasses import dataclass

from aldsl.errors import UserError
from aldsl.language.ast import Pos


@dataclass
class Diagnostic:
    """One problem at one place in a source file."""

    message: str
    pos: Pos | None
    hint: str = ""


class AlpError(UserError):
    """One or more problems in a .alp program, each with file:line:col, the line and a caret."""

    def __init__(self, path: str, source: str, diagnostics: list[Diagnostic]):
        self.path = path
        self.source = source
        self.diagnostics = diagnostics
        super().__init__(self.render())

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]

    def render(self) -> str:
        lines = self.source.splitlines()
        out = []
        for d in self.diagnostics:
            if d.pos is None:
                out.append(f"{self.path}: error: {d.message}")
            else:
                out.append(f"{self.path}:{d.pos.line}:{d.pos.col}: error: {d.message}")
                if 0 < d.pos.line <= len(lines):
                    text = lines[d.pos.line - 1].expandtabs(1)
                    width = 1
                    if d.pos.end_line == d.pos.line and d.pos.end_col > d.pos.col:
                        width = d.pos.end_col - d.pos.col
                    out.append(f"  {d.pos.line:>4} | {text}")
                    out.append(f"       | {' ' * (d.pos.col - 1)}{'^' * width}")
            if d.hint:
                out.append(f"  hint: {d.hint}")
        return "\n".join(out)
