"""``aldsl optimize``: real Optuna studies on real SQLite storage, on programs whose best answer is
known (candidates read from records, scored by Python rewards), and on the tiny random model.

The toy program: every query has three candidate answers, one correct. ``reward good`` scores the
correct one 1, ``reward noise`` scores it 0; with ``select = argmax`` and ``good`` the program is
always right, with ``first`` it is right about a third of the time, with ``noise`` never.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc

import aldsl
from aldsl.cli import main
from aldsl.store.data import read_counts
from aldsl.errors import UserError
from aldsl.runtime.session import Session
from aldsl.optimizers.run import optimize

FUNCS = '''
import os, time

def _wait():
    time.sleep(float(os.environ.get("ALDSL_TEST_SLEEP", "0")))

def good(x, candidate, record):
    _wait()
    return 1.0 if candidate == record["answer"] else 0.0

def noise(x, candidate, record):
    _wait()
    return 0.0 if candidate == record["answer"] else 1.0

def longer(x, candidate, record):
    return min(1.0, len(candidate) / 40)

def has_e(x, candidate, record):
    return 1.0 if "e" in candidate else 0.0
'''

TOY = """program toy "pick the right candidate"
data d = jsonl("data.jsonl", input = "question", target = "answer", split = "split")
generator pick = candidates(["a", "b", "c"], seed = 0 in [0, 3])
prompter p = prompt(template = direct)
reward good = external(call = "funcs.py:good")
reward noise = external(call = "funcs.py:noise")
evaluator acc = exact_match()
flow main = loop(d, generator = pick, prompter = p, evaluator = acc, samples = 3,
                 reward = noise in {noise, good}, select = first in {first, argmax})
optimize search = optuna(objective = acc, on = d.dev, trials = TRIALS, minibatch = 8, promote = 2SETTINGS)
"""


def toy(tmp_path: Path, trials: int = 8, settings: str = "", body: str = TOY) -> Path:
    rows = []
    for i in range(40):
        fields = {"a": f"x{i}", "b": f"y{i}", "c": f"z{i}"}
        split = "train" if i < 10 else "dev" if i < 30 else "test"
        rows.append({"id": f"q{i}", "question": f"question {i}", "answer": fields["abc"[i % 3]], **fields,
                     "split": split})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "funcs.py").write_text(FUNCS)
    path = tmp_path / "toy.alp"
    path.write_text(body.replace("TRIALS", str(trials)).replace("SETTINGS", settings))
    return path


def trials_of(storage: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def finished(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "aldsl.cli", "optimize", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_search_finds_the_known_best_and_writes_everything(tmp_path, isolated_cache):
    result = optimize(aldsl.compile(toy(tmp_path, trials=10)), session=Session(), out_dir=tmp_path / "out")
    assert result.values["main.reward"] == "good" and result.values["main.select"] == "argmax"
    assert result.score("optimized", "dev") == 1.0 and result.score("optimized", "test") == 1.0
    assert result.score("defaults", "dev") < 0.6 and result.score("defaults", "test") < 0.6
    assert [len(r.evaluation.scores) for r in result.rows] == [20, 20, 10, 10]  # full dev, full test
    low, high = result.row("defaults", "test").ci
    assert 0 <= low <= result.score("defaults", "test") <= high <= 1
    folder = tmp_path / "out" / "toy"
    for name in ("optimized.alp", "report.md", "report.json", "history.png", "study.db"):
        assert (folder / name).is_file(), name
    report = (folder / "report.md").read_text()
    assert "| optimized | test | 10 | 1.000 |" in report and "| defaults | dev | 20 |" in report
    stored = trials_of(f"sqlite:///{folder / 'study.db'}", "toy")
    assert len(finished(stored)) == 10
    assert stored[0].user_attrs["values"] == {"main.reward": "noise", "main.select": "first", "pick.seed": 0}
    assert result.extra["reproduced"]["same"]


def test_the_report_split_is_never_read_during_the_search(tmp_path, isolated_cache, monkeypatch):
    from aldsl.optimizers import optuna_method

    seen: dict[str, int] = {}

    def stop(self, result, *args):
        seen.update(read_counts())
        raise RuntimeError("stopped before the report phase")

    before = read_counts().get("test", 0)
    monkeypatch.setattr(optuna_method.OptunaSearch, "_report_phase", stop)
    with pytest.raises(RuntimeError, match="stopped before"):
        optimize(aldsl.compile(toy(tmp_path, trials=6)), session=Session(), out_dir=tmp_path / "out")
    assert seen.get("test", 0) == before  # search, promotion and the optimized.alp check: no test read
    assert seen["dev"] > 0


def test_reading_the_report_split_inside_a_trial_fails(tmp_path, isolated_cache, monkeypatch):
    from aldsl.store.data import SplitForbidden
    from aldsl.optimizers import evaluation

    real = evaluation.Executor

    class Peeking(real):  # a (buggy) optimizer that peeks at test while scoring a trial
        def run(self, records, split="inputs", evaluate=True):
            self.records("test")
            return super().run(records, split, evaluate)

    monkeypatch.setattr(evaluation, "Executor", Peeking)
    with pytest.raises(SplitForbidden, match="held out"):
        optimize(aldsl.compile(toy(tmp_path, trials=2)), session=Session(), out_dir=tmp_path / "out")


def test_minibatch_promotion_and_pruning(tmp_path, isolated_cache):
    result = optimize(aldsl.compile(toy(tmp_path, trials=14)), session=Session(), out_dir=tmp_path / "out")
    states = [t["state"] for t in result.trials]
    assert states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 2
    promoted = [t for t in result.trials if t["full"] is not None]
    assert len(promoted) == 2  # promote = 2: the two best by minibatch score
    best_minibatch = sorted((t for t in result.trials if t["state"] == "COMPLETE"), key=lambda t: -t["score"])
    assert {t["number"] for t in promoted} <= {t["number"] for t in best_minibatch[:len(promoted) + 3]}
    stored = trials_of(result.storage, result.study)
    complete = [t for t in stored if t.state == optuna.trial.TrialState.COMPLETE]
    assert all(len(t.user_attrs["scores"]) == 8 for t in complete)  # minibatch of 8 of the 20 dev queries
    pruned = [t for t in stored if t.state == optuna.trial.TrialState.PRUNED]
    assert all(t.user_attrs["queries_scored"] < 8 for t in pruned)
    assert len(result.row("optimized", "dev").evaluation.scores) == 20  # promoted to the whole dev split


def test_resume_continues_a_study_with_the_same_suggestions(tmp_path, isolated_cache):
    # one trial at a time (batched trials resume alike between batches: test_batched_trials.py)
    prog = aldsl.compile(toy(tmp_path, settings=", batch = 1"))
    first = optimize(prog, session=Session(), out_dir=tmp_path / "a", trials=3)
    assert first.ran == 3
    resumed = optimize(prog, session=Session(), out_dir=tmp_path / "a", trials=6)
    assert resumed.ran == 3  # only the missing trials
    straight = optimize(prog, session=Session(), out_dir=tmp_path / "b", trials=6)
    params = lambda r: [t["values"] for t in r.trials]  # noqa: E731
    assert params(resumed) == params(straight)  # the seed fixes the sampler, whatever the interruptions


def test_kill_9_loses_no_completed_trial(tmp_path, isolated_cache):
    path = toy(tmp_path, trials=6)
    out = tmp_path / "out"
    storage = f"sqlite:///{out / 'toy' / 'study.db'}"
    proc = cli(str(path), "--out", str(out), "--quiet", env={"ALDSL_TEST_SLEEP": "0.15"})
    deadline = time.time() + 120
    done: list[optuna.trial.FrozenTrial] = []
    while time.time() < deadline:
        time.sleep(0.5)
        if (out / "toy" / "study.db").exists():
            try:
                done = finished(trials_of(storage, "toy"))
            # the study is not created yet, or the run is creating the storage's tables right now
            except (KeyError, sqlalchemy.exc.SQLAlchemyError):
                continue
            if len(done) >= 2:
                break
    assert len(done) >= 2, proc.stderr.read().decode() if proc.poll() is not None else "timed out"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.params, t.values) for t in finished(trials_of(storage, "toy"))}
    assert 2 <= len(before) < 6
    rerun = cli(str(path), "--out", str(out), "--quiet")
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr.decode()
    after = trials_of(storage, "toy")
    assert len(finished(after)) == 6
    assert {t.number: (t.params, t.values) for t in after if t.number in before} == before  # kept, not redone
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in after)
    assert "optimized" in stdout.decode()


def test_two_workers_split_one_study(tmp_path, isolated_cache):
    path = toy(tmp_path, trials=6)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args = [str(path), "--storage", storage, "--study", "shared", "--worker", "--quiet", "--out",
            str(tmp_path / "out")]
    workers = [cli(*args, env={"ALDSL_TEST_SLEEP": "0.2"}) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err.decode()
    trials = trials_of(storage, "shared")
    assert len(finished(trials)) == 6  # exactly the budget, between them
    assert len({t.user_attrs["worker"] for t in finished(trials)}) == 2
    final = optimize(aldsl.compile(path), session=Session(), out_dir=tmp_path / "out", storage=storage, study="shared")
    assert final.ran == 0  # the budget was spent by the workers: this process only promotes and reports
    assert final.score("optimized", "dev") == max(t["full"] for t in final.trials if t["full"] is not None)


def test_optimized_alp_parses_compiles_and_reproduces_its_dev_score(tmp_path, isolated_cache):
    result = optimize(aldsl.compile(toy(tmp_path, trials=8)), session=Session(), out_dir=tmp_path / "out")
    text = result.optimized.read_text()
    assert text.startswith("# Optimized by `aldsl optimize`") and " in {" not in text and " in [" not in text
    assert '"../../data.jsonl"' in text and '"../../funcs.py:good"' in text  # relative to the new folder
    loaded = aldsl.load_optimized(tmp_path / "out" / "toy")
    assert len(loaded.search_space) == 0 and loaded.values == {}
    again = loaded.run(split="dev")
    assert again.scores["acc"] == pytest.approx(result.score("optimized", "dev"))
    assert main(["check", str(result.optimized)]) == 0


def test_grid_visits_every_point_once(tmp_path, isolated_cache):
    result = optimize(aldsl.compile(toy(tmp_path, trials=50, settings=", sampler = grid, pruner = none")),
                      session=Session(), out_dir=tmp_path / "out")
    assert result.budget == 16  # 4 seeds x 2 rewards x 2 rules, not 50
    points = {json.dumps(t["values"], sort_keys=True) for t in result.trials}
    assert len(points) == 16 and result.score("optimized", "dev") == 1.0


def test_no_search_space_runs_the_program_as_is(tmp_path, isolated_cache):
    body = TOY.replace("seed = 0 in [0, 3]", "seed = 0").replace("noise in {noise, good}", "good").replace(
        "first in {first, argmax}", "argmax")
    result = optimize(aldsl.compile(toy(tmp_path, body=body)), session=Session(), out_dir=tmp_path / "out")
    assert [r.label for r in result.rows] == ["as written", "as written"]
    assert "no search space" in " ".join(result.notes) and result.score("as written", "test") == 1.0


def test_cost_objective_gives_a_pareto_front(tmp_path, isolated_cache, tiny_model_dir):
    body = f"""program costly "longer answers score more but cost more"
data d = jsonl("data.jsonl", input = "question", target = "answer", split = "split")
generator g = model("{tiny_model_dir}", temperature = 0.8, max_tokens = 4 in [1, 12])
prompter p = prompt(template = direct)
evaluator long = external(call = "funcs.py:longer")
flow main = loop(d, generator = g, prompter = p, evaluator = long)
optimize search = optuna(objective = long, on = d.dev, trials = 8, minibatch = 6, promote = 1, cost = true)
"""
    result = optimize(aldsl.compile(toy(tmp_path, body=body)), session=Session(), out_dir=tmp_path / "out")
    front = result.extra["pareto"]
    assert len(front) >= 2
    assert [p["tokens"] for p in front] == sorted(p["tokens"] for p in front)
    assert [p["score"] for p in front] == sorted(p["score"] for p in front)  # paying more buys more
    folder = tmp_path / "out" / "costly"
    assert (folder / "pareto.png").is_file() and "## Pareto front" in (folder / "report.md").read_text()
    assert len(optuna.load_study(study_name="costly", storage=result.storage).directions) == 2


@pytest.mark.parametrize("args, message", [
    (["--set", "pick.seed=9"], "outside"),
    (["--storage", "nosuchdb://nowhere"], "cannot open the study storage"),
    (["--storage", "sqlite:////no/such/folder/x.db"], "cannot open"),
    (["--trials", "0"], "at least 1"),
])
def test_bad_input_fails_before_any_work(tmp_path, isolated_cache, monkeypatch, capsys, args, message):
    import aldsl.backends
    from aldsl.optimizers import evaluation

    def forbidden(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(aldsl.backends, "load_backend", forbidden)
    monkeypatch.setattr(evaluation, "evaluate", forbidden)
    monkeypatch.setattr("aldsl.optimizers.optuna_method.evaluate", forbidden)
    assert main(["optimize", str(toy(tmp_path)), "--out", str(tmp_path / "out"), "--quiet", *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "toy" / "study.db").exists()


@pytest.mark.parametrize("settings, message", [
    (", sampler = cmaes", "cmaes searches numbers only"),
    (", sampler = grid", None),
])
def test_sampler_constraints(tmp_path, isolated_cache, settings, message):
    body = TOY.replace("seed = 0 in [0, 3]", "seed = 0").replace("samples = 3,", "samples = 3,") if message is None else TOY
    if message is None:  # a float range cannot be a grid
        body = TOY.replace('reward good = external(call = "funcs.py:good")',
                           'reward good = external(call = "funcs.py:good", on_error = 0.0 in [0.0, 1.0])')
        message = "grid needs a finite grid"
    with pytest.raises(UserError, match=message):
        optimize(aldsl.compile(toy(tmp_path, body=body, settings=settings)), session=Session(),
                 out_dir=tmp_path / "out")


def test_inverted_range_is_an_error_with_its_position(tmp_path, isolated_cache, capsys):
    path = toy(tmp_path, body=TOY.replace("seed = 0 in [0, 3]", "seed = 0 in [3, 0]"))
    assert main(["optimize", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "toy.alp:3:" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_changed_program_does_not_mix_into_an_old_study(tmp_path, isolated_cache):
    path = toy(tmp_path, trials=2)
    optimize(aldsl.compile(path), session=Session(), out_dir=tmp_path / "out")
    path.write_text(path.read_text().replace("samples = 3", "samples = 2"))
    with pytest.raises(UserError, match="different program"):
        optimize(aldsl.compile(path), session=Session(), out_dir=tmp_path / "out")


def test_cli_end_to_end_on_the_tiny_model_prints_the_table(tmp_path, isolated_cache, tiny_model_dir, capsys):
    body = f"""program tiny "search the template and L on a tiny model"
data d = jsonl("data.jsonl", input = "question", target = "answer", split = "split")
generator g = model("{tiny_model_dir}", temperature = 0.7, max_tokens = 4)
prompter p = prompt(template = zero_shot in {{zero_shot, cot}})
reward r = external(call = "funcs.py:longer")
evaluator acc = exact_match()
evaluator long = external(call = "funcs.py:longer")
flow main = loop(d, generator = g, prompter = p, evaluator = [long, acc], samples = 1 in [1, 3], reward = r,
                 select = argmax)
optimize search = optuna(objective = long, on = d.dev, trials = 4, minibatch = 6, promote = 2, report_queries = 5)
"""
    path = toy(tmp_path, body=body)
    assert main(["optimize", str(path), "--out", str(tmp_path / "out"), "--seed", "3", "--set", "p.template=cot"]) == 0
    out = capsys.readouterr().out
    assert "tiny: optuna, objective long" in out and "optimized" in out and "defaults" in out
    assert "95% CI" in out and "tokens/query" in out and "report.md" in out
    result = json.loads((tmp_path / "out" / "tiny" / "report.json").read_text())
    assert result["settings"]["seed"] == 3 and all(t["values"]["p.template"] == "cot" for t in result["trials"])
    assert [r["n"] for r in result["rows"]] == [20, 20, 5, 5]
    assert (tmp_path / "out" / "tiny" / "score_vs_L.png").is_file()


def test_cmaes_climbs_a_numeric_space(tmp_path, isolated_cache, tiny_model_dir):
    body = f"""program climb "longer answers score more: the best max_tokens is the top of the range"
data d = jsonl("data.jsonl", input = "question", target = "answer", split = "split")
generator g = model("{tiny_model_dir}", temperature = 0.8, max_tokens = 2 in [1, 16])
prompter p = prompt(template = direct)
evaluator long = external(call = "funcs.py:longer")
flow main = loop(d, generator = g, prompter = p, evaluator = long)
optimize search = optuna(objective = long, on = d.dev, trials = 8, minibatch = 0, sampler = cmaes, promote = 1)
"""
    result = optimize(aldsl.compile(toy(tmp_path, body=body)), session=Session(), out_dir=tmp_path / "out")
    assert result.trials[0]["values"] == {"g.max_tokens": 2}  # CMA-ES starts from the program's defaults
    assert result.values["g.max_tokens"] > 2  # it climbed: longer answers score more
    assert result.score("optimized", "dev") > result.score("defaults", "dev")


def test_prompt_oirl_chooses_per_query_and_compares(tmp_path, isolated_cache, tiny_model_dir, monkeypatch):
    from aldsl.optimizers import oirl

    body = f"""program prompts "choose the template per query (Prompt-OIRL)"
data d = jsonl("data.jsonl", input = "question", target = "answer", split = "split")
generator g = model("{tiny_model_dir}", max_tokens = 6)
prompter p = prompt(template = zero_shot in {{zero_shot, cot, direct}})
reward success = binary(d.train, among = [zero_shot, cot, direct], features = hidden, model = logistic)
evaluator e = external(call = "funcs.py:has_e")
flow main = loop(d, generator = g, prompter = p, evaluator = e)
optimize oirl = oirl(objective = e, on = d.dev, reward = success)
"""
    test_reads: list[int] = []
    real = oirl.write_optimized

    def spy(*args, **kwargs):  # the last step before the report phase
        test_reads.append(read_counts().get("test", 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(oirl, "write_optimized", spy)
    before = read_counts().get("test", 0)
    result = optimize(aldsl.compile(toy(tmp_path, body=body)), session=Session(), out_dir=tmp_path / "out")
    assert test_reads == [before]
    labels = [(r.label, r.split) for r in result.rows]
    assert labels[:6] == [("defaults", "dev"), ("prompt zero_shot", "dev"), ("prompt cot", "dev"),
                          ("prompt direct", "dev"), ("random prompt per query", "dev"), ("optimized", "dev")]
    best = result.extra["best_prompt"]
    assert labels[6:] == [("defaults", "test"), (f"best single prompt ({best})", "test"),
                          ("random prompt per query", "test"), ("optimized", "test")]
    dev = {r.label: r.evaluation.mean for r in result.rows if r.split == "dev"}
    assert dev[f"prompt {best}"] == max(dev[f"prompt {n}"] for n in ("zero_shot", "cot", "direct"))
    assert sum(result.extra["choices"].values()) == 10 and "auc" in result.extra["binary_metrics"]
    text = result.optimized.read_text()
    assert "template = per_query(success)" in text
    assert result.extra["reproduced"]["same"]
    again = aldsl.load_optimized(tmp_path / "out" / "prompts").run(split="test")
    assert again.scores["e"] == pytest.approx(result.score("optimized", "test"))
    assert {t.template for t in again.traces} <= {"zero_shot", "cot", "direct"}
    assert "## Binary reward model" in (tmp_path / "out" / "prompts" / "report.md").read_text()
    assert result.artifacts and all(a.startswith("reward") for a in result.artifacts)
    assert (tmp_path / "out" / "prompts" / "artifacts" / result.artifacts[0]).is_dir()


def test_workers_option_starts_extra_search_processes(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.setenv("ALDSL_TEST_SLEEP", "0.6")  # per reward call (argmax calls it in every trial): the
    # main process must not finish the study before the extra worker has started (imports take seconds)
    program = aldsl.compile(toy(tmp_path, trials=6), {"main.select": "argmax"})
    result = optimize(program, session=Session(), out_dir=tmp_path / "out", workers=2)
    done = [t for t in result.trials if t["state"] in ("COMPLETE", "PRUNED")]
    assert len(done) == 6 and len({t["worker"] for t in done}) == 2
    assert result.score("optimized", "dev") == max(t["full"] for t in result.trials if t["full"] is not None)
    assert not any("exited with status" in n for n in result.notes)


def test_set_of_an_unsearched_parameter_is_kept_and_fingerprinted(tmp_path, isolated_cache, capsys):
    path = toy(tmp_path, trials=3)
    out = str(tmp_path / "out")
    assert main(["optimize", str(path), "--out", out, "--quiet", "--set", "good.timeout=5",
                 "--set", "main.select=argmax"]) == 0
    text = (tmp_path / "out" / "toy" / "optimized.alp").read_text()
    assert "timeout = 5" in text and "select = argmax" in text
    report = json.loads((tmp_path / "out" / "toy" / "report.json").read_text())
    assert all(t["values"]["main.select"] == "argmax" for t in report["trials"])  # pinned: not searched
    capsys.readouterr()
    assert main(["optimize", str(path), "--out", out, "--quiet", "--set", "main.select=argmax"]) == 2
    assert "different program" in capsys.readouterr().err


def test_a_trial_killed_before_it_named_its_worker_is_failed_after_the_grace_period(tmp_path, monkeypatch):
    from aldsl.optimizers import search

    storage = search.storage_of(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    orphan = study.ask()  # RUNNING, no worker attribute, no heartbeat: as after a kill -9 at the wrong moment
    named = study.ask()
    named.set_user_attr(search.WORKER_ATTR, f"elsewhere:{os.getpid()}")  # another machine's live worker
    assert search.fail_dead_trials(study) == 0  # within the grace period nothing is touched
    monkeypatch.setattr(search, "GRACE_S", -1)
    assert search.fail_dead_trials(study) == 1
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {orphan.number: optuna.trial.TrialState.FAIL, named.number: optuna.trial.TrialState.RUNNING}


def test_a_budget_of_one_trial_runs_the_defaults_and_reports(tmp_path, isolated_cache):
    result = optimize(aldsl.compile(toy(tmp_path, trials=1)), session=Session(), out_dir=tmp_path / "out")
    assert len(result.trials) == 1 and result.trials[0]["state"] == "COMPLETE" and result.report.is_file()
