"""The Python API: compile a program, inspect and concretise its graph, run it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import networkx as nx

from aldsl.language import auto
from aldsl.language.check import Checked, check
from aldsl.compiler.builder import compile_checked
from aldsl.errors import UserError
from aldsl.rewards.trained import SavedReward
from aldsl.runtime.executor import Executor, inputs_to_records
from aldsl.runtime.traces import RunResult
from aldsl.compiler.graph import ProgramGraph
from aldsl.language.parser import parse, parse_file
from aldsl.runtime.session import Session
from aldsl.language.overrides import apply_overrides
from aldsl.language.schema import TRAINED_REWARDS
from aldsl.language.space import SearchSpace, extract
from aldsl.compiler.specs import Input
from aldsl.store.data import DataSpec, forbid_splits


class CompiledProgram:
    """A checked program compiled to its execution graph at some search values (defaults first)."""

    def __init__(self, graph: ProgramGraph, space: SearchSpace, checked: Checked | None = None,
                 session: Session | None = None):
        self.program_graph = graph
        self.search_space = space
        self.checked = checked
        self.session = session  # what run() uses when given none (load_optimized: one that reads shipped artifacts)

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
        return CompiledProgram(graph, space, self.checked, self.session)

    @property
    def input_data(self) -> DataSpec:
        """The data declaration the flow reads its queries from (its input and target field names)."""
        source = self.program_graph.spec("input")
        assert isinstance(source, Input)
        spec = self.program_graph.spec(f"data:{source.data}")
        assert isinstance(spec, DataSpec)
        return spec

    def run(self, inputs: Sequence[str | dict[str, Any]] | None = None, *, split: str = "dev",
            limit: int | None = None, session: Session | None = None) -> RunResult:
        """Run the program on ``inputs`` (query strings or records), else on a split of its data (dev
        unless asked: test is the held-out split, for the final report only).

        Returns a RunResult with per-query traces, ``answers`` and mean evaluator scores. Records carry
        their target as ``y`` or under the data's target field; inputs are scored when every one has it.
        """
        executor = Executor(self.program_graph, session or self.session)
        if inputs is not None:
            spec = self.input_data
            records = inputs_to_records(inputs, spec.input, spec.target)[:limit]
            return executor.run(records, split="inputs", evaluate=all(r["y"] is not None for r in records))
        return executor.run(executor.records(split, limit), split=split)

    def answer(self, inputs: Sequence[str | dict[str, Any]], session: Session | None = None) -> list[str]:
        """The program's answers to ``inputs`` (query strings or records), in order."""
        return self.run(inputs, session=session).answers

    def to_json(self) -> str:
        return self.program_graph.to_json()

    def save(self, out_dir: str | Path = "build") -> Path:
        """Write ``<out_dir>/<program>.graph.json``."""
        return self.program_graph.save(Path(out_dir) / f"{self.name}.graph.json")

    def __repr__(self) -> str:
        return (f"CompiledProgram({self.name!r}, {self.graph.number_of_nodes()} nodes, "
                f"{len(self.search_space)} search parameters)")


def compile(path_or_source: str | Path, values: Mapping[str, Any] | None = None) -> CompiledProgram:
    """Parse, check and compile a .alp file (a path) or program text.

    ``values`` pins search parameters (``"main.samples": 4``); a name that is not a search parameter
    sets that declaration's parameter instead (``"orm.queries": 50``), checked like written text.
    """
    is_source = isinstance(path_or_source, str) and ("\n" in path_or_source or
                                                     re.match(r"\s*program\s", path_or_source) is not None)
    program = parse(path_or_source) if is_source else parse_file(path_or_source)
    checked = check(program)
    reasons: list[str] = []
    if auto.requested(checked):  # space = auto: the proposed space is written into the program text
        program, reasons = auto.propose(checked)
        checked = check(program)
        checked.auto = reasons
    searched = set(extract(checked).names)
    values = dict(values or {})
    overrides = {k: v for k, v in values.items() if k not in searched}
    if overrides:
        checked = check(apply_overrides(program, overrides))
        checked.program, checked.overrides = program, overrides  # the source as written, and what --set changed
        checked.auto = reasons
        values = {k: v for k, v in values.items() if k in searched}
    graph, space = compile_checked(checked, values)
    return CompiledProgram(graph, space, checked)


def load_graph(path: str | Path) -> CompiledProgram:
    """Reload a compiled graph (``aldsl compile`` output) with no source file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such graph file; create it with `aldsl compile FILE`")
    try:
        graph = ProgramGraph.from_json(p.read_text(encoding="utf-8"))
    except (UserError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: {e}") from None
    return CompiledProgram(graph, SearchSpace.from_json(graph.g.graph.get("search_space", [])))


def load_optimized(folder: str | Path) -> CompiledProgram:
    """Compile ``folder/optimized.alp`` (written by ``aldsl optimize``); its runs use a Session that also
    finds the reward models and checkpoints shipped in ``folder/artifacts``."""
    path = Path(folder) / "optimized.alp"
    if not path.is_file():
        raise UserError(f"{path}: no such file; `aldsl optimize FILE --out DIR` writes DIR/<program>/optimized.alp")
    compiled = compile(path)
    compiled.session = Session(extra_artifacts=[Path(folder) / "artifacts"])
    return compiled


def fit_program_rewards(compiled: CompiledProgram, session: Session,
                        names: Sequence[str] | None = None) -> dict[str, tuple[str, dict[str, float]]]:
    """Fit (or load) the trained rewards a program declares (all, or ``names``), never reading its
    test split; returns each reward's family and held-out metrics."""
    if compiled.checked is None:
        raise UserError("fitting rewards needs the program's source; pass the .alp file, not a saved graph")
    declared = {d.name: d.ctor for d in compiled.checked.of_kind("reward") if d.ctor in TRAINED_REWARDS}
    wanted = list(names or declared)
    unknown = [n for n in wanted if n not in declared]
    if unknown:
        raise UserError(f"--reward {unknown[0]}: the program declares no trained reward of that name; its trained "
                        f"rewards are: {', '.join(declared) or 'none'}")
    graph, _ = compile_checked(compiled.checked, compiled.values, rewards=wanted)
    fitted = {}
    with forbid_splits("test"):
        for name in wanted:
            model = session.reward(f"reward:{name}", graph)
            fitted[name] = (declared[name], dict(getattr(model, "metrics", {})))
    return fitted


def load_reward(folder: str | Path) -> SavedReward:
    """A trained reward's artifact folder (``reward/KEY``: in the cache, or shipped in an optimized program's
    ``artifacts/``), ready to score outside any program: ``load_reward(folder).score(queries, candidates)``."""
    return SavedReward(folder)
