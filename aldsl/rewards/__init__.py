"""Reward models R: one module per family, all behind :class:`RewardModel`.

``load_reward(spec, session, graph)`` builds the reward of a compiled ``reward_model`` node:
trained families fit once on the data the program names and are reused from their artifact
while that data and their settings are unchanged.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aldsl.rewards.base import RewardItem, RewardModel, Scored

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

FAMILIES = {
    "bradley_terry": "bradley_terry",
    "discriminator": "discriminator",
    "outcome": "outcome",
    "process": "process",
    "binary": "binary",
    "critic": "critic",
    "external": "external",
}

__all__ = ["FAMILIES", "RewardItem", "RewardModel", "Scored", "load_reward"]


def load_reward(spec: dict[str, Any], session: Session, graph: ProgramGraph) -> RewardModel:
    """The reward model of a compiled spec (fitted or loaded from its artifact)."""
    module = importlib.import_module(f"{__name__}.{FAMILIES[spec['kind']]}")
    return module.build(spec, session, graph)
