"""What every reward model offers the executor: batched scores for (query, candidate) items."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class RewardItem:
    """One candidate to score: the query text, the candidate (thought: the prefill and every round's
    text) and its record; ``prompt`` is the round-1 prompt the candidate continues (without prefill)."""

    x: str
    candidate: str
    record: dict[str, Any] = field(default_factory=dict, compare=False)
    prompt: str = ""


@dataclass
class Scored:
    """A reward value r, with optional feedback for the next round's prompt and an error."""

    score: float
    feedback: str | None = None
    error: str | None = None


class RewardModel(Protocol):
    """R(x, phi): scores whole batches."""

    name: str

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        ...
