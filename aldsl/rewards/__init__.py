"""Reward models R: one module per family (named as the family), all behind :class:`RewardModel`.

``load_reward(spec, session, graph)`` builds the reward of a compiled ``reward_model`` node:
trained families fit once on the data the program names and are reused from their artifact
while that data and their settings are unchanged. The families are the language's
(``aldsl.language.schema.REWARD_FAMILIES``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from aldsl.compiler.specs import Reward, SpecError
from aldsl.language.schema import REWARD_FAMILIES
from aldsl.rewards.base import RewardItem, RewardModel, Scored

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

__all__ = ["RewardItem", "RewardModel", "Scored", "load_reward"]


def load_reward(spec: Reward, session: Session, graph: ProgramGraph) -> RewardModel:
    """The reward model of a compiled spec (fitted or loaded from its artifact)."""
    if spec.kind not in REWARD_FAMILIES:
        raise SpecError(f"reward {spec.name!r}: unknown family {spec.kind!r} (known: {', '.join(REWARD_FAMILIES)})")
    return importlib.import_module(f"{__name__}.{spec.kind}").build(spec, session, graph)
