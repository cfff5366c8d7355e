"""The typed, immutable syntax tree of a .alp program, with source positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Pos:
    """A source span: 1-based line and column of its start and end."""

    line: int
    col: int
    end_line: int
    end_col: int


@dataclass(frozen=True)
class Number:
    value: int | float
    pos: Pos


@dataclass(frozen=True)
class String:
    value: str
    pos: Pos


@dataclass(frozen=True)
class Bool:
    value: bool
    pos: Pos


@dataclass(frozen=True)
class NoneLit:
    pos: Pos


@dataclass(frozen=True)
class Ref:
    """A name, or a dotted path such as ``problems.train``."""

    parts: tuple[str, ...]
    pos: Pos

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class ListLit:
    items: tuple[Value, ...]
    pos: Pos


@dataclass(frozen=True)
class DictLit:
    items: tuple[tuple[str, Value], ...]
    pos: Pos


@dataclass(frozen=True)
class Arg:
    """A call argument; ``key`` is None for a positional one."""

    key: str | None
    value: Value
    pos: Pos


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Arg, ...]
    pos: Pos


@dataclass(frozen=True)
class Range:
    low: Value
    high: Value
    log: bool
    pos: Pos


@dataclass(frozen=True)
class Choices:
    options: tuple[Value, ...]
    pos: Pos


@dataclass(frozen=True)
class Search:
    """A searchable value: ``default in [lo, hi]``, ``in log[lo, hi]`` or ``in {a, b}``."""

    default: Value
    domain: Range | Choices
    pos: Pos


Value = Union[Number, String, Bool, NoneLit, Ref, ListLit, DictLit, Call, Search]


@dataclass(frozen=True)
class Decl:
    """``kind name = call``."""

    kind: str
    name: str
    call: Call
    pos: Pos
    name_pos: Pos


@dataclass(frozen=True)
class Program:
    name: str
    description: str
    decls: tuple[Decl, ...]
    pos: Pos
    path: str  # the source file, or "<string>"
    source: str

    def find(self, kind: str) -> tuple[Decl, ...]:
        """All declarations of one kind, in source order."""
        return tuple(d for d in self.decls if d.kind == kind)
