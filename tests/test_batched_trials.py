"""Trials run together: several concrete programs in threads, their generations merged into shared
model batches (aldsl.runtime.batching), on the tiny random model and on real Optuna studies."""

from __future__ import annotations

import optuna
import pytest

import aldsl
from aldsl.runtime.batching import Coalescer
from aldsl.runtime.executor import Executor
from aldsl.runtime.session import Session
from aldsl.optimizers.run import optimize
from tests.test_optimize import finished, toy, trials_of

TINY = """program tiny "templates and L on a tiny model"
data d = jsonl("data.jsonl", input = "question", target = "answer", split = "split")
generator g = model("MODEL", temperature = 0.7 in {0.0, 0.7, 1.0}, max_tokens = 4, dtype = float32)
prompter p = prompt(template = zero_shot in {zero_shot, cot, direct})
evaluator long = external(call = "funcs.py:longer")
flow main = loop(d, generator = g, prompter = p, evaluator = long, samples = 2 in [1, 3], select = first)
optimize search = optuna(objective = long, on = d.dev, trials = 6, minibatch = 4, promote = 1, report_queries = 4,
                         pruner = none, batch = 3)
"""


@pytest.mark.parametrize("cached", [False, True])
def test_runs_together_give_what_each_gives_alone_in_fewer_model_calls(tmp_path, isolated_cache, tiny_model_dir,
                                                                         cached):
    prog = aldsl.compile(toy(tmp_path, body=TINY.replace("MODEL", str(tiny_model_dir))))
    variants = [prog.with_params({"p.template": t, "main.samples": n, "g.temperature": tau}) for t, n, tau in
                [("zero_shot", 1, 0.7), ("cot", 3, 1.0), ("direct", 2, 0.0), ("zero_shot", 3, 0.7)]]
    alone = []
    for v in variants:
        run = Executor(v.program_graph, Session(use_cache=False)).run(Executor(v.program_graph).records("dev")[:5])
        alone.append([[c.text for c in t.candidates] for t in run.traces])

    session = Session(use_cache=cached)
    coalescer = Coalescer(len(variants))
    session.coalescer = coalescer
    records = Executor(prog.program_graph).records("dev")[:5]

    def one(variant) -> list[list[str]]:
        run = Executor(variant.program_graph, session).run(records)
        return [[c.text for c in t.candidates] for t in run.traces]

    together = coalescer.map(one, variants)
    # A sample draws the same random numbers in any batch, but its logits differ in the last bits with the
    # batch's shape (padding, shared prefixes: docs/performance.md), which now and then flips a token of
    # this random model's near-flat distributions. Every greedy sample and nearly every sampled one match;
    # a mix-up of rows or runs would change them all.
    assert together[2] == alone[2]
    same = [x == y for t, a in zip(together, alone) for tr, ar in zip(t, a) for x, y in zip(tr, ar, strict=True)]
    assert len(same) == 5 * (1 + 3 + 1 + 3) and sum(same) >= 0.9 * len(same)  # greedy L = 2 is one sample
    assert coalescer.calls == 1  # one round: the four runs, three temperatures, were one backend call


def test_an_error_in_one_run_reaches_its_caller_and_releases_the_others(tmp_path, isolated_cache, tiny_model_dir):
    prog = aldsl.compile(toy(tmp_path, body=TINY.replace("MODEL", str(tiny_model_dir))))
    session = Session(use_cache=False)
    coalescer = Coalescer(2)
    session.coalescer = coalescer
    records = Executor(prog.program_graph).records("dev")[:3]
    ran: list[int] = []

    def one(i: int) -> int:
        if i == 1:
            raise RuntimeError("a trial failed before generating")
        ran.append(len(Executor(prog.program_graph, session).run(records).traces))  # waits for no one after
        return i

    with pytest.raises(RuntimeError, match="failed before generating"):
        coalescer.map(one, [0, 1])
    assert ran == [3]  # the failing run's exit released the waiting one, which finished


def test_batched_search_on_the_tiny_model_runs_every_trial_and_reports(tmp_path, isolated_cache, tiny_model_dir):
    prog = aldsl.compile(toy(tmp_path, body=TINY.replace("MODEL", str(tiny_model_dir))))
    result = optimize(prog, session=Session(), out_dir=tmp_path / "out")
    stored = trials_of(result.storage, result.study)
    assert len(finished(stored)) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in stored)
    assert stored[0].user_attrs["values"] == {"g.temperature": 0.7, "p.template": "zero_shot",
                                              "main.samples": 2}  # the defaults first
    starts = sorted(t.datetime_start for t in stored)
    ends = sorted(t.datetime_complete for t in stored)
    assert starts[2] < ends[0] and starts[5] < ends[3]  # three at a time: 0-2 together, then 3-5
    assert {r.label for r in result.rows} == {"defaults", "optimized"}
    steps = result.extra["contributions"]  # psi, then L: the middle program ran beside nothing
    changed = {k for k, v in result.values.items() if result.defaults[k] != v}
    assert {k for s in steps for k in s["changed"]} == changed
    if steps:
        assert steps[-1]["score"] == pytest.approx(result.score("optimized", "dev"))
        assert sum(s["delta"] for s in steps) == pytest.approx(result.score("optimized", "dev") -
                                                                result.score("defaults", "dev"))
        assert (tmp_path / "out" / "tiny" / "contributions.png").is_file()
        assert "## What each knob contributed" in result.report.read_text()


@pytest.mark.parametrize("batch", [1, 3])
def test_finds_the_known_best_with_pruning_and_resumes_between_batches(tmp_path, isolated_cache, batch):
    path = toy(tmp_path, trials=12, settings=f", batch = {batch}")
    result = optimize(aldsl.compile(path), session=Session(), out_dir=tmp_path / "out")
    assert result.values["main.reward"] == "good" and result.values["main.select"] == "argmax"
    assert result.score("optimized", "test") == 1.0
    prog = aldsl.compile(path)
    first = optimize(prog, session=Session(), out_dir=tmp_path / "a", trials=6)
    resumed = optimize(prog, session=Session(), out_dir=tmp_path / "a", trials=9)
    straight = optimize(prog, session=Session(), out_dir=tmp_path / "b", trials=9)
    assert (first.ran, resumed.ran) == (6, 3)
    params = lambda r: [t["values"] for t in r.trials]  # noqa: E731
    assert params(resumed) == params(straight)


def test_a_batch_that_finds_the_budget_taken_runs_nothing(tmp_path, isolated_cache):
    from aldsl.optimizers import search

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s")
    study.enqueue_trial({})
    study.ask()  # another worker's running trial holds the whole budget of 1
    ran = search._run_batch(study, 1, lambda t: 1.0, [optuna.samplers.RandomSampler(seed=0)] * 3, None,
                            lambda n: pytest.fail("no trial to run together"))
    assert ran == 0 and [t.state for t in study.trials][-1] == optuna.trial.TrialState.FAIL
