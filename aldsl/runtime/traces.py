"""What a run returns: per-query traces of candidates (thoughts) and the run's result."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Candidate:
    """One thought phi: its text (cumulative in continue mode), round, parent and reward."""

    text: str
    round: int
    parent: int | None = None
    tokens: int = 0
    finish: str = ""
    cached: bool = False
    reward: float | None = None
    feedback: str | None = None
    error: str | None = None
    done: bool = False


@dataclass
class Trace:
    """One query's path through the graph."""

    id: str
    x: str
    record: dict[str, Any]
    template: str = ""
    prompts: list[dict[str, Any]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    selected: int | None = None
    answer: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    # working state, not exported
    base: str = field(default="", repr=False)
    prefill: str = field(default="", repr=False)
    pending: list[tuple[str, int | None]] = field(default_factory=list, repr=False)

    @property
    def generated_tokens(self) -> int:
        return sum(c.tokens for c in self.candidates)

    def round_candidates(self, t: int) -> list[int]:
        return [i for i, c in enumerate(self.candidates) if c.round == t]

    def to_json(self) -> dict[str, Any]:
        record = {k: v for k, v in self.record.items() if k not in ("x",)}
        return {"id": self.id, "x": self.x, "record": record, "template": self.template, "prompts": self.prompts,
                "candidates": [asdict(c) for c in self.candidates], "kept": self.kept, "selected": self.selected,
                "answer": self.answer, "scores": self.scores, "generated_tokens": self.generated_tokens}


@dataclass
class RunResult:
    """Traces of every query, mean evaluator scores and run statistics."""

    program: str
    split: str
    traces: list[Trace]
    scores: dict[str, float]
    stats: dict[str, Any]
    values: dict[str, Any]

    @property
    def answers(self) -> list[str]:
        """Each query's answer, in input order."""
        return [t.answer for t in self.traces]

    def per_query(self, evaluator: str) -> list[float]:
        return [t.scores[evaluator] for t in self.traces]

    def tokens_per_query(self) -> float:
        return sum(t.generated_tokens for t in self.traces) / max(len(self.traces), 1)

    def to_jsonl(self, path: str | Path, traces: bool = True) -> Path:
        """One JSON line per query: its whole trace, or (``traces=False``) its id, input, answer, target and
        scores."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with p.open("w", encoding="utf-8") as f:
            for t in self.traces:
                line = t.to_json() if traces else {"id": t.id, "x": t.x, "answer": t.answer, "y": t.record.get("y"),
                                                   "scores": t.scores}
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        return p
