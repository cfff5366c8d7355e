"""The LLM judge evaluator and the self-critic reward share this: P(yes) from the model's logits."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from aldsl.compiler.specs import Template
from aldsl.language.templates import render

if TYPE_CHECKING:
    from aldsl.backends import Backend


YES = ("Yes", "yes", " Yes", " yes")
NO = ("No", "no", " No", " no")


def yes_probability(backend: Backend, template: Template, xs: Sequence[str], candidates: Sequence[str],
                    records: Sequence[Mapping[str, Any]]) -> list[float]:
    """P(yes) / (P(yes) + P(no)) of the model's next words after the grading prompt, batched."""
    prompts = []
    for x, cand, rec in zip(xs, candidates, records):
        body = render(template.body, {**rec, "x": x, "candidate": cand})
        messages = [{"role": "system", "content": template.system}] if template.system else []
        prompts.append(backend.format_chat(messages + [{"role": "user", "content": body}]) + (template.prefill or ""))
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
