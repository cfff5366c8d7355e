"""Scoring a concrete program on a set of records, the unit of work of every optimizer.

Resources (trained rewards, fine-tuned checkpoints) are built first with the session's own
progress bars; the runs themselves report only their generated tokens to the caller's bar, so a
search shows one bar with its throughput and running best instead of one bar per node per trial.
"""

from __future__ import annotations

import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from aldsl.store.artifacts import ArtifactStore
from aldsl.runtime.batching import Coalescer
from aldsl.runtime.executor import Executor
from aldsl.progress import Advance

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.program import CompiledProgram
    from aldsl.runtime.session import Session


@dataclass
class Evaluation:
    """Per-query objective scores and generated tokens of one program on some records."""

    ids: list[str]
    scores: list[float]
    tokens: list[int]
    seconds: float = 0.0
    templates: list[str] = field(default_factory=list)
    fit_seconds: float = 0.0  # of ``seconds``: training or loading the reward models and fine-tunings

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0

    @property
    def tokens_per_query(self) -> float:
        return sum(self.tokens) / len(self.tokens) if self.tokens else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"n": len(self.scores), "mean": self.mean, "tokens_per_query": self.tokens_per_query,
                "seconds": self.seconds, "ids": self.ids, "scores": self.scores, "tokens": self.tokens}

    @staticmethod
    def merge(parts: Sequence["Evaluation"], order: Sequence[str]) -> "Evaluation":
        """Several evaluations of disjoint records as one, in the order of ``order`` (ids)."""
        rows = {i: (s, t, m) for p in parts for i, s, t, m in
                zip(p.ids, p.scores, p.tokens, p.templates or [""] * len(p.ids))}
        return Evaluation(list(order), [rows[i][0] for i in order], [rows[i][1] for i in order],
                          sum(p.seconds for p in parts), [rows[i][2] for i in order])


def prepare_resources(graph: ProgramGraph, session: Session) -> None:
    """Train or load every reward model and fine-tuned checkpoint the graph uses, and load its models
    (memoised by the session)."""
    from aldsl.compiler.specs import ModelGenerator

    for node in graph.nodes():
        op = graph[node]["op"]
        if op == "reward_model":
            session.reward(node, graph)
        elif op == "finetune":
            session.checkpoint(node, graph)
    for node in graph.nodes():
        gen = getattr(graph.spec(node), "generator", None)
        if isinstance(gen, ModelGenerator):
            session.backend(gen, graph)


def evaluate(program: CompiledProgram, records: Sequence[dict[str, Any]], session: Session, objective: str, *,
             split: str, advance: Advance | None = None, chunks: int = 1,
             on_chunk: Callable[[int, Evaluation], None] | None = None) -> Evaluation:
    """Run ``program`` on ``records`` and read the ``objective`` evaluator per query.

    With ``chunks`` > 1 the records run in that many consecutive parts and ``on_chunk(step, so_far)``
    is called after each with the evaluation so far (a pruner may raise there to stop the trial).
    """
    start = time.perf_counter()
    prepare_resources(program.program_graph, session)
    out = Evaluation([], [], [], templates=[], fit_seconds=time.perf_counter() - start)
    size = max(1, -(-len(records) // max(1, chunks)))
    with forward_tokens(session, advance):
        for step, first in enumerate(range(0, len(records), size)):
            result = Executor(program.program_graph, session).run(records[first:first + size], split=split)
            for trace in result.traces:
                out.ids.append(trace.id)
                out.scores.append(float(trace.scores[objective]))
                out.tokens.append(trace.generated_tokens)
                out.templates.append(trace.template)
            if on_chunk is not None:
                on_chunk(step, out)
    out.seconds = time.perf_counter() - start
    return out


def evaluate_together(programs: Sequence[CompiledProgram], records: Sequence[dict[str, Any]], session: Session,
                      objective: str, *, split: str, advance: Advance | None = None) -> list[Evaluation]:
    """Several programs on the same records, side by side (see :func:`running_together`)."""
    for program in programs:
        prepare_resources(program.program_graph, session)
    if len(programs) < 2:
        return [evaluate(p, records, session, objective, split=split, advance=advance) for p in programs]
    with running_together(session, len(programs), advance) as run_all:
        return run_all(lambda p: evaluate(p, records, session, objective, split=split, advance=advance), programs)


@contextmanager
def running_together(session: Session, n: int, advance: Advance | None) -> Iterator[Callable[..., list[Any]]]:
    """The context of ``n`` runs on ``session`` (their resources prepared beforehand): yields
    ``run_all(fn, items)``, which runs ``fn`` on each item in its own thread, their generation calls
    merged into shared model batches (:mod:`aldsl.runtime.batching`) and their tokens on ``advance``'s bar."""
    coalescer = Coalescer(n)
    session.coalescer = coalescer
    try:
        with forward_tokens(session, advance):
            yield coalescer.map
    finally:
        session.coalescer = None


class _Forwarding:
    """A reporter for inner runs: no bars of its own; generated tokens go to the outer bar."""

    enabled = True

    def __init__(self, advance: Advance):
        self._advance = advance

    def log(self, message: str) -> None:
        pass

    @contextmanager
    def task(self, description: str, total: int | None = None, budget: int | None = None) -> Iterator[Advance]:
        def advance(n: int = 1, **fields: Any) -> None:
            if fields.get("tokens"):
                self._advance(0, tokens=fields["tokens"])

        yield advance


@contextmanager
def forward_tokens(session: Session, advance: Advance | None) -> Iterator[None]:
    """While inside, the session's runs show their tokens on ``advance``'s bar (nothing if None). Inside
    an outer forwarding (trials run together in threads) it changes nothing: the threads share one bar."""
    if advance is None or isinstance(session.reporter, _Forwarding) or not getattr(session.reporter, "enabled", False):
        yield
        return
    saved = session.reporter
    session.reporter = _Forwarding(advance)  # type: ignore[assignment]
    try:
        yield
    finally:
        session.reporter = saved


def seeded_subset(records: Sequence[dict[str, Any]], seed: int, limit: int) -> list[dict[str, Any]]:
    """A seeded shuffle of ``records`` cut to ``limit`` (0: all)."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:limit] if limit > 0 else shuffled


class RecordingStore(ArtifactStore):
    """An ArtifactStore that remembers every artifact it finds or creates (to ship them with a program)."""

    def __init__(self, store: ArtifactStore):
        super().__init__(store.root, store.extra)
        self.used: list[tuple[str, str]] = []

    def _note(self, kind: str, key: str) -> None:
        if (kind, key) not in self.used:
            self.used.append((kind, key))

    def find(self, kind: str, key: str, validate: Any = None):  # type: ignore[override]
        found = super().find(kind, key, validate)
        if found is not None:
            self._note(kind, key)
        return found

    @contextmanager
    def create(self, kind: str, key: str, meta: dict[str, Any]) -> Iterator[Any]:  # type: ignore[override]
        with super().create(kind, key, meta) as folder:
            yield folder
        self._note(kind, key)
