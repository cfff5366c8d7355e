"""The search space of a program: every searchable value, as a first-class object."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping

from aldsl.language.check import Checked, Nested, SearchVal, to_json_value
from aldsl.errors import UserError


@dataclass(frozen=True)
class SearchParam:
    """One searchable value: ``name`` is ``decl.param`` (or ``decl.param.sub`` inside a nested call)."""

    name: str
    kind: str  # "int" | "float" | "categorical"
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    targets: tuple[str, ...] = ()  # graph node ids whose parameters it sets

    def describe(self) -> str:
        if self.choices is not None:
            return "{" + ", ".join("none" if c is None else str(c) for c in self.choices) + "}"
        return f"{'log' if self.log else ''}[{self.low:g}, {self.high:g}]"

    def validate(self, value: Any) -> Any:
        """The value, normalised, or a UserError saying what is allowed."""
        if self.choices is not None:
            for c in self.choices:
                if c == value and isinstance(c, bool) == isinstance(value, bool):
                    return c
            raise UserError(f"{self.name} = {value!r} is not one of {self.describe()}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserError(f"{self.name} must be a number in {self.describe()}, got {value!r}")
        if self.kind == "int":
            if int(value) != value:
                raise UserError(f"{self.name} must be an integer in {self.describe()}, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        if not self.low <= value <= self.high:  # type: ignore[operator]
            raise UserError(f"{self.name} = {value} is outside {self.describe()}")
        return value

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["choices"] = list(self.choices) if self.choices is not None else None
        d["targets"] = list(self.targets)
        return d

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> "SearchParam":
        d = dict(d)
        d["choices"] = tuple(d["choices"]) if d.get("choices") is not None else None
        d["targets"] = tuple(d.get("targets", ()))
        return SearchParam(**d)


class SearchSpace:
    """An ordered collection of SearchParams."""

    def __init__(self, params: list[SearchParam]):
        self.params = {p.name: p for p in params}

    def __iter__(self) -> Iterator[SearchParam]:
        return iter(self.params.values())

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> SearchParam:
        return self.params[name]

    def __contains__(self, name: object) -> bool:
        return name in self.params

    @property
    def names(self) -> list[str]:
        return list(self.params)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self}

    def validate(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by ``values``; unknown names and bad values raise UserError."""
        unknown = [k for k in values if k not in self.params]
        if unknown:
            known = ", ".join(self.names) or "(none: the program declares no searchable values)"
            raise UserError(f"unknown search parameter {unknown[0]!r}; the program's search space is: {known}")
        out = self.defaults()
        for k, v in values.items():
            out[k] = self.params[k].validate(v)
        return out

    def to_json(self) -> list[dict[str, Any]]:
        return [p.to_json() for p in self]

    @staticmethod
    def from_json(items: list[Mapping[str, Any]]) -> "SearchSpace":
        return SearchSpace([SearchParam.from_json(i) for i in items])


def extract(checked: Checked) -> SearchSpace:
    """Every SearchVal of the program, in source order."""
    found: list[SearchParam] = []

    def visit(prefix: str, params: Mapping[str, Any]) -> None:
        for pname, value in params.items():
            name = f"{prefix}.{pname}"
            if isinstance(value, SearchVal):
                found.append(_param(name, value))
            elif isinstance(value, Nested):
                visit(name, value.params)

    for d in checked.decls.values():
        visit(d.name, d.params)
    return SearchSpace(found)


def _param(name: str, s: SearchVal) -> SearchParam:
    if s.choices is not None:
        return SearchParam(name, "categorical", to_json_value(s.default),
                           choices=tuple(to_json_value(c) for c in s.choices))
    kind = "int" if isinstance(s.low, int) and isinstance(s.high, int) else "float"
    return SearchParam(name, kind, s.default, s.low, s.high, s.log)


def concretize(checked: Checked, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each declaration's parameters with every search replaced by its value (validated)."""

    def resolve(prefix: str, params: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pname, value in params.items():
            name = f"{prefix}.{pname}"
            if isinstance(value, SearchVal):
                chosen = values.get(name, to_json_value(value.default))
                if value.choices is not None:
                    value = next(c for c in value.choices if to_json_value(c) == chosen)
                else:
                    value = chosen
            if isinstance(value, Nested):
                value = Nested(value.ctor, resolve(name, value.params), value.pos)
            out[pname] = value
        return out

    return {name: resolve(name, d.params) for name, d in checked.decls.items()}
