"""bench/rewards.py's programs give every reward it fits a node of the graph it fits it from."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import aldsl

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_rewards", ROOT / "bench" / "rewards.py")
rewards = importlib.util.module_from_spec(_spec)
sys.modules["bench_rewards"] = rewards  # dataclasses look their module up there
_spec.loader.exec_module(rewards)


def test_every_fitted_reward_is_in_its_graph(tmp_path):
    head = rewards.HEAD.format(epochs=1, lr=1e-3)
    lm = rewards.LM.format(layers=1, value="last", lm_epochs=1)
    arith, prefs, reviews = rewards.write_programs(tmp_path, rewards.QUICK, head, lm)
    compiled = aldsl.compile(arith)
    for name in rewards.LEARNED:
        assert f"reward:{name}" in rewards.fit_graph(compiled, name).g, name
    for path in (prefs, reviews):
        assert "reward:bt" in aldsl.compile(path).graph, path.name
