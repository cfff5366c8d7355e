"""The implicit reward of a DPO fine-tuning (Rafailov et al.): r(x, y) = beta (log pi(y|x) - log pi_ref(y|x)).

pi is the generator fine-tuned by the named ``dpo(...)`` declaration and pi_ref its base weights;
y is the whole candidate (its prefill and every round's text) after the round-1 prompt, so the
reward of a multi-round thought is that of the whole trajectory. Both log-probabilities are
batched and cached like every other score of a backend.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

from aldsl.compiler.specs import Finetune, Reward
from aldsl.rewards.base import RewardItem, Scored
from aldsl.rewards.trained import sampler

if TYPE_CHECKING:
    from aldsl.backends import Backend
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session


class Implicit:
    """r = beta (log pi - log pi_ref) of each candidate after its prompt."""

    def __init__(self, name: str, policy: Backend, reference: Backend, beta: float):
        self.name, self.policy, self.reference, self.beta = name, policy, reference, beta

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        prompts, candidates = [i.prompt for i in items], [i.candidate for i in items]
        tuned = self.policy.logprobs(prompts, candidates)
        base = self.reference.logprobs(prompts, candidates)
        return [Scored(self.beta * (a - b)) for a, b in zip(tuned, base)]


def build(spec: Reward, session: Session, graph: ProgramGraph) -> Implicit:
    finetune = graph.spec(spec["finetune"])
    assert isinstance(finetune, Finetune)
    reference = sampler(spec).base()
    policy = replace(reference, checkpoint=str(session.checkpoint(spec["finetune"], graph)))
    return Implicit(spec.name, session.backend(policy, graph), session.backend(reference, graph), finetune["beta"])
