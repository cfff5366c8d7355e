"""The two "external system" tasks of Table 1: EUREKA reward design and LLAMBO-style BO."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from aldsl.isolation.external import ExternalItem, ExternalSpec, run_external
from aldsl.tasks import bo, eureka

DATA = Path(__file__).resolve().parent.parent / "programs" / "data"
CONSTANT = "def compute_reward(obs, action, next_obs, terminated):\n    return 1.0\n"
WRONG_SIGN = ("def compute_reward(obs, action, next_obs, terminated):\n"
              "    x, x_dot, theta, theta_dot = next_obs\n"
              "    if terminated:\n        return 10.0\n"
              "    return (theta / 0.2095) ** 2 + 0.1 * (x / 2.4) ** 2 - 1.0\n")


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def reference_result() -> dict:
    answer = f"Here is the reward:\n```python\n{eureka.REFERENCE_REWARD}```\nIt balances."
    return eureka.score("cartpole", answer, {"seed": 3})


def test_reference_reward_beats_constant_and_wrong_sign(reference_result):
    constant = eureka.score("cartpole", CONSTANT, {"seed": 3})
    wrong = eureka.score("cartpole", WRONG_SIGN, {"seed": 3})
    assert reference_result["score"] >= 0.9
    assert constant["score"] <= 0.1 and wrong["score"] <= 0.1
    assert "learned nothing" in constant["feedback"]
    assert "Episode lengths" in reference_result["feedback"]
    assert "Mean true return" in reference_result["feedback"]


def test_eureka_scores_are_deterministic_per_seed(reference_result):
    again = eureka.score("cartpole", eureka.REFERENCE_REWARD, {"seed": 3})
    assert again == reference_result


def test_syntax_error_scores_zero_with_traceback():
    broken = "```python\ndef compute_reward(obs, action, next_obs, terminated)\n    return 1.0\n```"
    result = eureka.score("cartpole", broken, {"seed": 0})
    assert result["score"] == 0.0
    assert "SyntaxError" in result["feedback"]
    assert 'File "candidate.py", line 1' in result["feedback"]


def test_runtime_error_and_missing_function_score_zero():
    crashing = "def compute_reward(obs, action, next_obs, terminated):\n    return obs[7]\n"
    result = eureka.score("cartpole", crashing, {"seed": 0})
    assert result["score"] == 0.0
    assert "IndexError" in result["feedback"] and "return obs[7]" in result["feedback"]
    missing = eureka.score("cartpole", "I would reward balance.", {"seed": 0})
    assert missing["score"] == 0.0 and "compute_reward" in missing["feedback"]


def test_eureka_runs_as_an_external_reward():
    spec = ExternalSpec(call="aldsl.tasks.eureka:score", timeout=60.0)
    results = run_external(spec, [ExternalItem("cartpole", eureka.REFERENCE_REWARD, {"seed": 0}),
                                  ExternalItem("cartpole", CONSTANT, {"seed": 0})])
    assert results[0].error is None and results[0].score > results[1].score + 0.5
    assert "Task success" in results[1].feedback


@pytest.mark.parametrize("name, needle", [
    ("eureka_tasks.jsonl", "def compute_reward(obs, action, next_obs, terminated)"),
    ("bo_tasks.jsonl", "JSON object"),
])
def test_task_records_are_complete(name, needle):
    rows = records(name)
    assert len(rows) >= 3 and len({r["id"] for r in rows}) == len(rows)
    assert {r["split"] for r in rows} == {"train", "dev", "test"}
    assert all(needle in r["task"] and isinstance(r["seed"], int) for r in rows)


def test_bo_good_config_beats_bad_config():
    good = bo.score("svc", 'I propose {"C": 10, "gamma": 0.05} as the next point.', {"seed": 0})
    bad = bo.score("svc", '{"C": 0.01, "gamma": 50}', {"seed": 0})
    assert good["score"] >= 0.97 and bad["score"] <= 0.2
    assert "accuracy" in good["feedback"]


def test_bo_evaluation_is_memoised_and_deterministic():
    first = bo.score("svc", "{'C': 3.0, 'gamma': '0.02'}", {"seed": 1})
    start = time.monotonic()
    second = bo.score("svc", '{"c": 3, "GAMMA": 0.02}', {"seed": 1})
    assert second == first and time.monotonic() - start < 0.05


@pytest.mark.parametrize("answer, problem", [
    ("C should be 10 and gamma small", "no JSON object"),
    ('{"C": 10, "gamma": 500}', "gamma=500 is outside [1e-06, 100]"),
    ('{"C": -1, "gamma": 0.1}', "C=-1 is outside"),
    ('{"C": 10}', "missing hyperparameter(s) gamma"),
    ('{"C": 10, "gamma": 0.1, "kernel": "poly"}', "unknown hyperparameter(s) kernel"),
    ('{"C": "big", "gamma": 0.1}', "C must be a number"),
])
def test_bo_invalid_proposals_score_zero_with_advice(answer, problem):
    result = bo.score("svc", answer, {"seed": 0})
    assert result["score"] == 0.0
    assert problem in result["feedback"] and bo.space_text() in result["feedback"]


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_bo_baseline_curve_is_best_so_far(sampler):
    curve = bo.baseline(sampler, n_evals=4, seed=0)
    assert len(curve) == 4 and all(0.0 <= v <= 1.0 for v in curve)
    assert all(b >= a for a, b in zip(curve, curve[1:]))
    with pytest.raises(ValueError, match="sampler"):
        bo.baseline("grid", 3, 0)


def test_format_history_lists_configs_best_last():
    text = bo.format_history([({"C": 1.0, "gamma": 0.1}, 0.98), ({"C": 0.01, "gamma": 1.0}, 0.15)])
    assert text.splitlines() == ['{"C": 0.01, "gamma": 1.0} -> accuracy 0.1500',
                                 '{"C": 1.0, "gamma": 0.1} -> accuracy 0.9800']
