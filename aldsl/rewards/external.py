"""External rewards: a user's Python function or a command (failures score ``on_error``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from aldsl.compiler.specs import Reward
from aldsl.evaluators.external import external_scores, external_spec
from aldsl.rewards.base import RewardItem, Scored

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session


class External:
    """R given by an outside system; its feedback and errors reach the next round's prompt."""

    def __init__(self, spec: Reward):
        self.name = spec.name
        self.spec = external_spec(spec.name, spec.settings)

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        results = external_scores(self.spec, [i.x for i in items], [i.candidate for i in items],
                                  [i.record for i in items])
        return [Scored(r.score, r.feedback, r.error) for r in results]


def build(spec: Reward, session: Session, graph: ProgramGraph) -> External:
    return External(spec)
