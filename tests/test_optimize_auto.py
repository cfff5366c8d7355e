"""``space = auto``, theta-psi coupling, no wasted work and budgets: real programs on the tiny model
and the toy candidates program of test_optimize.py, real Optuna studies on SQLite."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

import aldsl
from aldsl.errors import UserError
from aldsl.language.pin import pin_source
from aldsl.optimizers.run import optimize
from aldsl.progress import Reporter
from aldsl.runtime.session import Session
from tests.test_optimize import toy

PROGRAM = """program auto_{kind} "the auto space on {kind}"
data d = jsonl("data.jsonl", input = "question"{fields}, split = "split")
generator g = model("{model}", max_tokens = 6)
prompter p = prompt()
evaluator acc = {evaluator}
flow main = loop(d, generator = g, prompter = p, answer = number, evaluator = acc)
optimize search = optuna(objective = acc, on = d.dev, trials = 3, minibatch = 4, queries = 6, report_queries = 4,
                         space = auto{extra})
"""


WORDS = "zero one two three four five six seven eight nine".split()


def records(kind: str, n: int = 24) -> list[dict]:
    """Records of each kind of data; "answers" spells its numbers out, so no arithmetic over the
    question's digits reaches them, and "arithmetic" writes them in digits."""
    rows = []
    for i in range(n):
        a, b = i % 7 + 2, i % 5 + 3
        pens = f"{WORDS[a]} pens and buys {WORDS[b]}" if kind == "answers" else f"{a} pens and buys {b}"
        row = {"id": f"q{i}", "question": f"Ann has {pens} more. How many pens?",
               "split": "train" if i < 12 else "dev" if i < 18 else "test"}
        if kind in ("answers", "arithmetic", "worked"):
            row["answer"] = str(a + b)
        if kind in ("worked", "demos"):
            row["solution"] = f"Ann has {a} pens and buys {b}: {a} + {b} = {a + b}. The answer is {a + b}."
        if kind == "preferences":
            row["chosen"], row["rejected"] = f"{a} + {b} = {a + b}", "I do not know"
        rows.append(row)
    return rows


FIELDS = {"answers": ', target = "answer"', "arithmetic": ', target = "answer"',
          "worked": ', target = "answer", demo = "solution"',
          "demos": ', target = none, demo = "solution"', "preferences": ", target = none", "none": ", target = none"}


def program(tmp_path: Path, kind: str, model: Path, extra: str = "") -> Path:
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records(kind)))
    evaluator = "numeric_match(field = \"answer\")" if kind in ("answers", "arithmetic", "worked") else 'regex("\\\\d")'
    path = tmp_path / f"{kind}.alp"
    path.write_text(PROGRAM.format(kind=kind, fields=FIELDS[kind], model=model, evaluator=evaluator, extra=extra))
    return path


@pytest.mark.parametrize("kind, reward, theta", [
    ("answers", "outcome(d.train", "rejection(d.train"),
    ("arithmetic", "outcome(d.train", "sft(d.train, solutions = arithmetic"),
    ("worked", "outcome(d.train", "sft(d.train"),
    ("demos", "discriminator(d.train", "sft(d.train"),
    ("preferences", "bradley_terry(d.train", "dpo(d.train, pairs = fields"),
    ("none", "critic()", None),
])
def test_the_auto_space_follows_the_data(tmp_path, tiny_model_dir, kind, reward, theta):
    compiled = aldsl.compile(program(tmp_path, kind, tiny_model_dir))
    source = compiled.checked.program.source
    assert reward in source
    names = set(compiled.search_space.names)
    assert {"p.template", "p.demos.k", "p.demos.pick", "main.samples", "main.select", "g.temperature"} <= names
    select = compiled.search_space["main.select"].choices
    assert {"argmax", "weighted_vote", "majority"} <= set(select)
    if theta is None:
        assert "g.finetune" not in names and "finetune " not in source
    else:
        assert theta in source and compiled.search_space["g.finetune"].choices[0] is None
    reasons = compiled.graph.graph["auto_space"]
    assert any(r.startswith("data: ") for r in reasons) and any(r.startswith("reward: ") for r in reasons)
    if kind == "answers":
        assert any("answers only" in r and "rejection" in r for r in reasons)
    if kind == "arithmetic":
        assert any("reaches the answer in 12 of the first 12" in r for r in reasons)
        assert any("derived from the golden answers" in r for r in reasons)
    # the defaults are the program as written: zero-shot, greedy, one sample, no fine-tuning
    defaults = compiled.search_space.defaults()
    assert defaults["main.samples"] == 1 and defaults["g.temperature"] == 0.0 and defaults["p.template"] == "zero_shot"
    assert defaults.get("g.finetune") is None and defaults["p.demos.k"] == 0
    # applying the proposal again changes nothing (optimized.alp keeps space = auto)
    (tmp_path / "again.alp").write_text(source)
    again = aldsl.compile(tmp_path / "again.alp")
    assert again.checked.program.source == source and again.search_space.names == compiled.search_space.names


def test_the_auto_space_keeps_what_the_program_writes(tmp_path, tiny_model_dir):
    path = program(tmp_path, "worked", tiny_model_dir)
    text = path.read_text().replace("prompter p = prompt()", "prompter p = prompt(template = cot)")
    text = text.replace("evaluator = acc)", "evaluator = acc, samples = 2)")
    compiled = aldsl.compile(text.replace('"data.jsonl"', f'"{tmp_path / "data.jsonl"}"'))
    assert "p.template" not in compiled.search_space and "main.samples" not in compiled.search_space
    assert "p.demos.k" in compiled.search_space


def test_check_and_graph_show_the_space_and_why(tmp_path, tiny_model_dir, capsys):
    from aldsl.cli import main

    path = program(tmp_path, "answers", tiny_model_dir)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "space = auto proposed" in out and "golden answers" in out and "g.finetune {none, auto_rationales}" in out
    assert main(["graph", str(path)]) == 0
    assert "rejection sampling" in capsys.readouterr().out


def test_a_fine_tuning_trains_on_the_prompts_it_is_searched_with(tmp_path, tiny_model_dir):
    compiled = aldsl.compile(program(tmp_path, "worked", tiny_model_dir))
    values = {"g.finetune": "auto_sft", "p.template": "cot", "p.demos.k": 2, "p.demos.pick": "nearest"}
    trial = compiled.with_params(values)
    spec = trial.graph.nodes["finetune:auto_sft"]["params"]
    prompt = {k: v for k, v in trial.graph.nodes[trial.program_graph.chain("prompt", 1)]["params"].items()
              if k != "round"}
    assert spec["prompter"] == prompt and spec["prompter"]["demos"]["k"] == 2
    other = compiled.with_params({**values, "p.demos.k": 0}).graph.nodes["finetune:auto_sft"]["params"]
    assert other["prompter"]["demos"]["k"] == 0  # another format, another fine-tuning
    # the written program fine-tunes on its pinned prompter, not on a copy at the defaults
    pinned = pin_source(compiled.checked, values)
    line = next(x for x in pinned.splitlines() if x.startswith("finetune auto_sft"))
    assert "prompter" not in line  # (the reward, trained at the defaults, gets a p_search copy)
    (tmp_path / "pinned.alp").write_text(pinned)
    written = aldsl.compile(tmp_path / "pinned.alp")
    assert written.graph.nodes["finetune:auto_sft"]["params"]["prompter"] == spec["prompter"]


def test_a_reward_no_setting_uses_is_not_fitted(tmp_path, isolated_cache, tiny_model_dir):
    compiled = aldsl.compile(program(tmp_path, "answers", tiny_model_dir))
    for values in ({}, {"main.select": "argmax"}, {"main.samples": 3, "main.select": "majority",
                                                   "g.temperature": 0.7}):
        assert "reward:auto_orm" not in compiled.with_params(values).graph, values
    used = compiled.with_params({"main.samples": 3, "main.select": "argmax", "g.temperature": 0.7})
    assert "reward:auto_orm" in used.graph
    session = Session()
    result = compiled.run(split="dev", session=session)  # L = 1, select = first: runs without the ORM
    assert len(result.traces) == 6 and not session._rewards
    assert all(c.reward is None for t in result.traces for c in t.candidates)


def test_greedy_with_several_samples_runs_one(tmp_path, isolated_cache, tiny_model_dir):
    compiled = aldsl.compile(program(tmp_path, "answers", tiny_model_dir))
    greedy = compiled.with_params({"main.samples": 4, "main.select": "majority"})
    assert greedy.graph.nodes[greedy.program_graph.chain("generate", 1)]["params"]["samples"] == 1
    sampled = compiled.with_params({"main.samples": 4, "main.select": "majority", "g.temperature": 0.7})
    assert sampled.graph.nodes[sampled.program_graph.chain("generate", 1)]["params"]["samples"] == 4
    result = greedy.run(split="dev")
    assert all(len(t.candidates) == 1 for t in result.traces)


def test_a_time_budget_stops_the_search_and_still_reports(tmp_path, isolated_cache, monkeypatch):
    monkeypatch.setenv("ALDSL_TEST_SLEEP", "0.02")  # each trial: 8 queries x 3 candidates x 20 ms
    path = toy(tmp_path, trials=30, settings=', budget = "1s"')
    result = optimize(aldsl.compile(path), session=Session(), out_dir=tmp_path / "out")
    assert 1 <= result.ran < 30
    assert any(n.startswith("Budget: the search stopped") for n in result.notes)
    report = (tmp_path / "out" / "toy" / "report.md").read_text()
    assert "Budget: the search stopped" in report and "| optimized | test |" in report


def test_the_budget_estimate_of_the_rest_is_an_upper_bound_and_reported(tmp_path, isolated_cache, monkeypatch):
    """The check prices what follows the search at the dearest trial so far; the report says what the rest
    really took beside the estimate."""
    monkeypatch.setenv("ALDSL_TEST_SLEEP", "0.05")  # rewards dominate: the estimate is not noise
    path = toy(tmp_path, trials=30, settings=', budget = "8s"')
    log = io.StringIO()
    session = Session(reporter=Reporter(console=Console(file=log, force_terminal=False, width=300)))
    result = optimize(aldsl.compile(path), session=session, out_dir=tmp_path / "out")
    assert result.ran < 30
    # the search's ETA (the median trial times the trials left) never runs past the budget's end
    etas = re.findall(r"^search: .*eta ([0-9.]+) min", log.getvalue(), re.M)
    assert etas and all(float(e) * 60 <= 8 for e in etas) and "(the budget's end)" in log.getvalue()
    note = next(n for n in result.notes if n.startswith("Budget: the rest took"))
    took, estimated = (float(x) * (60 if unit == "min" else 1)
                       for x, unit in re.findall(r"([0-9.]+) (s|min)", note))
    assert 0 < took <= estimated


def test_a_bad_budget_is_an_error_before_any_work(tmp_path, isolated_cache):
    path = toy(tmp_path, settings=', budget = "soon"')
    with pytest.raises(UserError, match="budget = 'soon'"):
        optimize(aldsl.compile(path), session=Session(), out_dir=tmp_path / "out")



def test_plan_measures_and_estimates_without_searching(tmp_path, isolated_cache, tiny_model_dir, capsys):
    from aldsl.cli import main

    path = program(tmp_path, "worked", tiny_model_dir, extra=', budget = "5m"')
    assert main(["optimize", str(path), "--plan", "--quiet", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "measured: 4 dev queries" in out and "tokens/s" in out and "a trial: 4 queries x L up to 4" in out
    assert "fit auto_orm (outcome)" in out and "whole run (3 trials)" in out and "budget 5.0 min" in out
    assert not (tmp_path / "out" / "auto_worked" / "study.db").exists()


def test_the_second_task_is_answer_only_and_gets_derived_solutions(tmp_path, tiny_model_dir):
    from aldsl.tasks.twostep import make_twostep

    rows = make_twostep(60, seed=3)
    assert rows == make_twostep(60, seed=3) and len({r["question"] for r in rows}) == 60
    assert all(set(r) == {"id", "question", "answer"} and int(r["answer"]) >= 0 for r in rows)
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = PROGRAM.format(kind="twostep", fields=', target = "answer"', model=tiny_model_dir,
                          evaluator="numeric_match()", extra="").replace(', split = "split"', "")
    path = tmp_path / "twostep.alp"
    path.write_text(text)
    compiled = aldsl.compile(path)
    assert "sft(d.train, solutions = arithmetic" in compiled.checked.program.source
    assert compiled.search_space["g.finetune"].choices == (None, "auto_derived")


def test_the_derived_fine_tuning_reads_only_the_train_split(tmp_path, tiny_model_dir, isolated_cache):
    """Dev and test records are poisoned (answers no chain reaches): the recipe's fine-tuning still trains,
    on one derived solution per train record and on nothing else."""
    rows = records("arithmetic")
    for r in rows:
        if r["split"] != "train":
            r["answer"] = "not a number"
    path = program(tmp_path, "arithmetic", tiny_model_dir)
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    trial = aldsl.compile(path).with_params({"g.finetune": "auto_derived"})
    folder = Session().checkpoint("finetune:auto_derived", trial.program_graph)
    trained = [json.loads(x) for x in (folder / "examples.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert len(trained) == len(train)
    assert [t["target"].strip() for t in trained] == [
        f"{r['question'].split()[2]} + {r['question'].split()[6]} = {r['answer']}. The answer is {r['answer']}."
        for r in train]
    assert json.loads((folder / "meta.json").read_text())["data"]["derived"] == len(train)


def test_contributions_add_psi_then_theta_then_l(tmp_path, tiny_model_dir):
    from aldsl.optimizers.contributions import steps

    compiled = aldsl.compile(program(tmp_path, "worked", tiny_model_dir))
    defaults = {p.name: p.default for p in compiled.search_space}
    values = {**defaults, "main.samples": 4, "g.temperature": 0.7, "g.finetune": "auto_sft", "p.template": "cot"}
    path = steps(defaults, values, compiled.checked)
    assert [(group, sorted(part)) for group, part, _ in path] == [
        ("psi", ["p.template"]), ("theta", ["g.finetune"]), ("L", ["g.temperature", "main.samples"])]
    assert path[0][2] == {**defaults, "p.template": "cot"}  # psi alone: the checkpoint of theta is not needed
    assert path[-1][2] == values
    assert steps(defaults, defaults, compiled.checked) == []


def test_a_fine_tuning_with_nothing_to_learn_fails_its_trial_and_the_search_goes_on(tmp_path, isolated_cache,
                                                                                   tiny_model_dir):
    """The tiny random model never samples a rationale the golden check accepts: the recipe's trial (the
    rejection fine-tuning) fails with the reason in the report, the trial counts toward the budget (it is not
    redone with the same values) and the search still promotes and reports."""
    path = program(tmp_path, "answers", tiny_model_dir)
    result = optimize(aldsl.compile(path), session=Session(), out_dir=tmp_path / "out")
    failed = [n for n in result.notes if "failed, the search went on" in n]
    assert failed and "none of the 4 samples per query" in failed[0]
    assert result.ran == 3  # the failed trial counts; trials = 3
    report = (tmp_path / "out" / "auto_answers" / "report.md").read_text()
    assert "failed, the search went on" in report and "| optimized | test |" in report
