"""Selection rules: which candidate becomes the answer."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

RULES = ("first", "argmax", "majority", "weighted_vote")


def select(rule: str, answers: Sequence[str], rewards: Sequence[float | None]) -> int:
    """Index of the chosen candidate.

    first: the first candidate; argmax: the highest reward (earliest on ties); majority: the first
    candidate whose extracted answer is the most common (earliest on ties); weighted_vote: the
    answer with the largest sum of softmax(reward) weights.
    """
    if not answers:
        raise ValueError("no candidates to select from")
    if rule == "first":
        return 0
    if rule == "argmax":
        values = [(-math.inf if r is None or math.isnan(r) else r) for r in rewards]
        return max(range(len(values)), key=lambda i: (values[i], -i))
    if rule in ("majority", "weighted_vote"):
        weights = [1.0] * len(answers) if rule == "majority" else _softmax(rewards)
        totals: dict[str, float] = defaultdict(float)
        first: dict[str, int] = {}
        for i, (a, w) in enumerate(zip(answers, weights)):
            key = a.strip()
            if not key:  # no answer extracted: casts no vote
                continue
            totals[key] += w
            first.setdefault(key, i)
        if not totals:
            return 0
        best = max(totals, key=lambda k: (totals[k], -first[k]))
        return first[best]
    raise ValueError(f"unknown selection rule {rule!r}; use one of {', '.join(RULES)}")


def _softmax(rewards: Sequence[float | None]) -> list[float]:
    values = [(-math.inf if r is None or math.isnan(r) else r) for r in rewards]
    top = max(values)
    if top == -math.inf:
        return [1.0] * len(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]
