"""LLM self-critic: a heuristic, untrained R(x, phi) = P(yes) that phi is correct, asked of the LLM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from aldsl.compiler.specs import ModelGenerator, Reward
from aldsl.errors import UserError
from aldsl.evaluators.judge import yes_probability
from aldsl.rewards.base import RewardItem, Scored

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session


class Critic:
    """R(x, phi) = P(yes) that phi is correct, asked of the LLM itself."""

    def __init__(self, spec: Reward, session: Session, graph: ProgramGraph):
        if not isinstance(spec.generator, ModelGenerator) or spec.template is None:
            raise UserError(f"reward {spec.name!r}: a critic needs a model generator (not candidates from records)")
        self.name = spec.name
        self.template = spec.template
        self.backend = session.backend(spec.generator, graph)

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        probs = yes_probability(self.backend, self.template, [i.x for i in items], [i.candidate for i in items],
                                [i.record for i in items])
        return [Scored(p) for p in probs]


def build(spec: Reward, session: Session, graph: ProgramGraph) -> Critic:
    return Critic(spec, session, graph)
