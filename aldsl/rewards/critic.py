"""LLM self-critic (a heuristic, untrained R) and the LLM judge evaluator: P(yes) from logits."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

from aldsl.language.templates import render
from aldsl.rewards.base import RewardItem, Scored

if TYPE_CHECKING:
    from aldsl.backends import Backend
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

YES = ("Yes", "yes", " Yes", " yes")
NO = ("No", "no", " No", " no")


def yes_probability(backend: Backend, template: dict[str, Any], xs: Sequence[str], candidates: Sequence[str],
                    records: Sequence[dict[str, Any]]) -> list[float]:
    """P(yes) / (P(yes) + P(no)) of the model's next words after the grading prompt, batched."""
    prompts = []
    for x, cand, rec in zip(xs, candidates, records):
        body = render(template["body"], {**rec, "x": x, "candidate": cand})
        messages = ([{"role": "system", "content": template["system"]}] if template.get("system") else [])
        prompts.append(backend.format_chat(messages + [{"role": "user", "content": body}]) + (template["prefill"] or ""))
    words = YES + NO
    lps = backend.logprobs([p for p in prompts for _ in words], [w for _ in prompts for w in words])
    out = []
    for i in range(len(prompts)):
        row = lps[i * len(words):(i + 1) * len(words)]
        yes = _logsumexp(row[: len(YES)])
        no = _logsumexp(row[len(YES):])
        out.append(1.0 / (1.0 + math.exp(no - yes)))
    return out


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


class Critic:
    """R(x, phi) = P(yes) that phi is correct, asked of the LLM itself."""

    def __init__(self, spec: dict[str, Any], session: Session, graph: ProgramGraph):
        self.name = spec["name"]
        self.template = spec["template"]
        self.backend = session.backend(spec["generator"], graph)

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        probs = yes_probability(self.backend, self.template, [i.x for i in items], [i.candidate for i in items],
                                [i.record for i in items])
        return [Scored(p) for p in probs]


def build(spec: dict[str, Any], session: Session, graph: ProgramGraph) -> Critic:
    return Critic(spec, session, graph)
