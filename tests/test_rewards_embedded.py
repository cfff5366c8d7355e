"""Trained rewards on the embedded model (SmolLM2-135M-Instruct): slow, run with ``-m slow``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import aldsl
from aldsl.backends.cache import GenerationCache
from aldsl.store.data import forbid_splits
from aldsl.runtime.executor import Executor
from aldsl.rewards import RewardItem
from aldsl.runtime.session import Session

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "programs" / "data"
pytestmark = pytest.mark.slow


def session(tmp_path: Path) -> Session:
    return Session(cache=GenerationCache(tmp_path / "g.sqlite"), artifacts=tmp_path / "art")


def test_bradley_terry_on_arithmetic_preferences_beats_chance_on_held_out_pairs(tmp_path):
    path = tmp_path / "prefs.alp"
    path.write_text(f"""program prefs "BT on prefs_arith"
data prefs = jsonl("{DATA / 'prefs_arith.jsonl'}", input = "prompt", target = "chosen")
reward bt = bradley_terry(prefs.train, epochs = 300, lr = 3e-3, queries = 120)
generator pair = candidates(["chosen", "rejected"])
prompter p = prompt(template = direct, chat = false)
evaluator pairwise = exact_match(field = "chosen")
flow main = loop(prefs, generator = pair, prompter = p, samples = 2, reward = bt, select = argmax, evaluator = pairwise)
""")
    compiled = aldsl.compile(path)
    s = session(tmp_path)
    with forbid_splits("test"):
        model = s.reward("reward:bt", compiled.program_graph)
    assert model.features.embed(["x"]).shape == (1, 576)  # the embedded model's hidden size
    assert model.metrics["pairwise_accuracy"] > 0.55
    test = Executor(compiled.program_graph, s).records("test")[:60]  # 120 + 60 pairs keep it near a minute
    chosen = model.score([RewardItem(r["x"], r["chosen"]) for r in test])
    rejected = model.score([RewardItem(r["x"], r["rejected"]) for r in test])
    accuracy = sum(a.score > b.score for a, b in zip(chosen, rejected)) / len(test)
    assert accuracy > 0.55  # pairs differ in one wrong number: the hidden states must see the arithmetic


def test_outcome_reward_on_the_embedded_model_fits_and_is_reused(tmp_path):
    rows = [json.loads(line) for line in (DATA / "arith.jsonl").read_text().splitlines()[:40]]
    (tmp_path / "arith.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "orm.alp"
    path.write_text("""program orm "ORM on the embedded model"
data problems = jsonl("arith.jsonl", input = "question", target = "answer", demo = "solution")
generator g = model("smollm2-135m", temperature = 0.8, max_tokens = 48, stop = ["\\n\\n"])
prompter p = prompt(template = zero_shot, demos = demos(problems.train, k = 2))
evaluator acc = numeric_match()
reward orm = outcome(problems.train, samples = 2, queries = 10)
flow main = loop(problems, generator = g, prompter = p, samples = 2, reward = orm, select = argmax,
                 answer = number, evaluator = acc)
""")
    graph = aldsl.compile(path).program_graph
    first = session(tmp_path)
    with forbid_splits("test"):
        model = first.reward("reward:orm", graph)
    assert first.stats()["misses"] == 20
    assert {"auc", "best_of_L", "first", "majority", "pass@L"} <= set(model.metrics)
    scores = model.score([RewardItem(rows[0]["question"], rows[0]["solution"]),
                          RewardItem(rows[0]["question"], "I like turtles.")])
    assert all(math.isfinite(s.score) for s in scores)
    again = session(tmp_path)
    with forbid_splits("test"):
        reused = again.reward("reward:orm", graph)
    assert again.stats()["misses"] == 0 and reused.metrics == model.metrics
