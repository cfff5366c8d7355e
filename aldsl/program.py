"""The Python API: compile a program, inspect and concretise its graph, run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import networkx as nx

from .check import Checked, check
from .compiler import compile_checked
from .errors import UserError
from .graph import ProgramGraph
from .parser import parse, parse_file
from .space import SearchSpace


class CompiledProgram:
    """A checked program compiled to its execution graph at some search values (defaults first)."""

    def __init__(self, graph: ProgramGraph, space: SearchSpace, checked: Checked | None = None):
        self.program_graph = graph
        self.search_space = space
        self.checked = checked

    @property
    def graph(self) -> nx.DiGraph:
        """The networkx execution graph."""
        return self.program_graph.g

    @property
    def name(self) -> str:
        return self.program_graph.program

    @property
    def values(self) -> dict[str, Any]:
        """The search values this graph was compiled with."""
        return dict(self.program_graph.g.graph.get("values", {}))

    @property
    def warnings(self) -> list[str]:
        return [d.message for d in self.checked.warnings] if self.checked else []

    def with_params(self, values: Mapping[str, Any]) -> "CompiledProgram":
        """A concrete program: the given search values, defaults for the rest."""
        if self.checked is None:
            if not values:
                return self
            raise UserError("this graph was loaded without its source; compile the .alp file to change its values")
        graph, space = compile_checked(self.checked, {**self.values, **values})
        return CompiledProgram(graph, space, self.checked)

    def to_json(self) -> str:
        return self.program_graph.to_json()

    def save(self, out_dir: str | Path = "build") -> Path:
        """Write ``<out_dir>/<program>.graph.json``."""
        return self.program_graph.save(Path(out_dir) / f"{self.name}.graph.json")

    def __repr__(self) -> str:
        return (f"CompiledProgram({self.name!r}, {self.graph.number_of_nodes()} nodes, "
                f"{len(self.search_space)} search parameters)")


def compile(path_or_source: str | Path, values: Mapping[str, Any] | None = None) -> CompiledProgram:
    """Parse, check and compile a .alp file (a path) or program text."""
    if isinstance(path_or_source, Path) or ("\n" not in path_or_source and not path_or_source.lstrip().startswith("program")):
        program = parse_file(path_or_source)
    else:
        program = parse(path_or_source)
    checked = check(program)
    graph, space = compile_checked(checked, values)
    return CompiledProgram(graph, space, checked)


def load_graph(path: str | Path) -> CompiledProgram:
    """Reload a compiled graph (``aldsl compile`` output) with no source file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such graph file; create it with `aldsl compile FILE`")
    graph = ProgramGraph.from_json(p.read_text(encoding="utf-8"))
    return CompiledProgram(graph, SearchSpace.from_json(graph.g.graph.get("search_space", [])))
