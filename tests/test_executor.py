"""The batch executor on a tiny random model: batching, determinism, cache, rounds, selection,
external rewards that fail, traces, the CLI and the Python API."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

import aldsl
from aldsl.backends.torch_utils import native_bf16
from aldsl.cli import main
from aldsl.errors import UserError
from aldsl.language.diagnostics import AlpError
from aldsl.progress import Reporter
from aldsl.runtime.session import Session

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"


def make_program(tmp_path: Path, model_dir: Path, *, gen: str = "temperature = 0.8, max_tokens = 6",
                 prompter: str = "template = cot", flow: str = "", extra: str = "", records: list[dict] | None = None) -> Path:
    rows = records or [{"id": f"q{i}", "question": f"Tom has {i} apples and buys {i + 2} more. How many now?",
                        "answer": str(2 * i + 2), "solution": f"{i} + {i + 2} = {2 * i + 2}.\nThe answer is {2 * i + 2}.",
                        "split": "train" if i < 6 else "dev"} for i in range(12)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "prog.alp"
    path.write_text(f"""program t "executor test"
data d = jsonl("data.jsonl", input = "question", target = "answer", demo = "solution", split = "split")
generator g = model("{model_dir}", {gen})
prompter p = prompt({prompter})
evaluator acc = numeric_match()
{extra}
flow main = loop(d, generator = g, prompter = p, evaluator = acc, answer = number{', ' + flow if flow else ''})
""")
    return path


@pytest.fixture
def session(isolated_cache):
    return Session()


def texts(result) -> list[list[str]]:
    return [[c.text for c in t.candidates] for t in result.traces]


def test_runs_a_split_with_L_samples(tmp_path, tiny_model_dir, session):
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, flow="samples = 3"))
    result = prog.run(split="dev", session=session)
    assert len(result.traces) == 6
    assert all(len(t.candidates) == 3 for t in result.traces)
    assert set(result.scores) == {"acc"} and 0 <= result.scores["acc"] <= 1
    assert result.stats["misses"] == 18 and result.stats["generated_tokens"] > 0
    assert all(t.prompts[0]["prompt"].startswith("<|im_start|>") for t in result.traces)  # chat template


def test_the_model_dtype_is_printed_once_and_recorded_in_the_run_stats(tmp_path, tiny_model_dir, isolated_cache):
    out = io.StringIO()
    session = Session(reporter=Reporter(console=Console(file=out, force_terminal=False, width=200)))
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, flow="samples = 2"))
    first, again = prog.run(split="dev", session=session), prog.run(split="dev", session=session)
    identity = session.backend(prog.program_graph.spec("generate_1").generator, prog.program_graph).identity
    dtype = "bfloat16" if native_bf16("cpu") else "float32"  # dtype = auto
    assert first.stats["dtypes"] == again.stats["dtypes"] == {identity: dtype}
    assert out.getvalue().count(f"model {identity} on cpu in {dtype}") == 1


def test_greedy_batched_equals_one_query_at_a_time(tmp_path, tiny_model_dir):
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, gen="temperature = 0.0, max_tokens = 8"))
    batched = prog.run(split="dev", session=Session(use_cache=False))
    from aldsl.runtime.executor import Executor

    single = []
    for record in Executor(prog.program_graph, Session(use_cache=False)).records("dev"):
        single.append(Executor(prog.program_graph, Session(use_cache=False)).run([record]).traces[0].candidates[0].text)
    assert [t.candidates[0].text for t in batched.traces] == single


FP32 = "temperature = 0.8, max_tokens = 6, dtype = float32"  # batch-independent samples need fp32


def test_same_seed_same_outputs_whatever_the_batch(tmp_path, tiny_model_dir):
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, gen=FP32, flow="samples = 2"))
    full = prog.run(split="dev", session=Session(use_cache=False))
    part = prog.run(split="dev", limit=2, session=Session(use_cache=False))
    assert texts(part) == texts(full)[:2]
    reseeded = aldsl.compile(make_program(tmp_path, tiny_model_dir, gen=FP32 + ", seed = 7",
                                          flow="samples = 2"))
    assert texts(reseeded.run(split="dev", session=Session(use_cache=False))) != texts(full)


def test_rerun_hits_the_cache(tmp_path, tiny_model_dir, isolated_cache):
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, flow="samples = 2"))
    first = prog.run(split="dev", session=Session())
    again = prog.run(split="dev", session=Session())
    assert first.stats["misses"] == 12 and again.stats["misses"] == 0 and again.stats["hits"] == 12
    assert again.stats["generated_tokens"] == 0 and texts(again) == texts(first)
    # L grows from 2 to 3: only the new sample index is generated
    more = aldsl.compile(make_program(tmp_path, tiny_model_dir, flow="samples = 3")).run(split="dev", session=Session())
    assert more.stats["hits"] == 12 and more.stats["misses"] == 6


def test_out_of_memory_backoff_gives_the_same_outputs(tmp_path, tiny_model_dir, monkeypatch):
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, gen=FP32, flow="samples = 3"))
    expected = texts(prog.run(split="dev", session=Session(use_cache=False)))
    original = Session.model_spec

    def limited(self, gen, graph=None):
        from dataclasses import replace

        return replace(original(self, gen, graph), max_batch_rows=2)  # bigger batches act as out of memory

    monkeypatch.setattr(Session, "model_spec", limited)
    assert texts(prog.run(split="dev", session=Session(use_cache=False))) == expected


def test_feedback_rounds_show_history_and_rewards(tmp_path, tiny_model_dir, session):
    reward = f'reward r = external(call = "{FIXTURES / "external_funcs.py"}:length_with_feedback", timeout = 10)'
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, extra=reward,
                                      flow="rounds = 3, samples = 2, keep = 2, reward = r, select = argmax, pool = all"))
    result = prog.run(split="dev", limit=2, session=session)
    for trace in result.traces:
        assert [c.round for c in trace.candidates] == [1, 1, 2, 2, 3, 3]
        assert all(c.reward is not None and c.feedback.endswith("characters") for c in trace.candidates)
        round2 = [p for p in trace.prompts if p["round"] == 2]
        assert len(round2) == 1
        best = max(trace.candidates[:2], key=lambda c: c.reward)
        assert "Attempt 1 (score" in round2[0]["prompt"] and best.text.strip() in round2[0]["prompt"]
        assert f"Feedback: {best.feedback}" in round2[0]["prompt"]
        chosen = trace.candidates[trace.selected]
        assert chosen.reward == max(c.reward for c in trace.candidates)  # pool = all


def test_continue_rounds_extend_kept_thoughts(tmp_path, tiny_model_dir, session):
    reward = f'reward r = external(call = "{FIXTURES / "external_funcs.py"}:length_with_feedback", timeout = 10)'
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, prompter="template = cot, followup = continue",
                                      gen='temperature = 0.8, max_tokens = 5, stop = ["\\n"]', extra=reward,
                                      flow="rounds = 2, samples = 3, keep = 2, reward = r, select = argmax"))
    result = prog.run(split="dev", limit=2, session=session)
    for trace in result.traces:
        first = trace.candidates[:3]
        kept = sorted(range(3), key=lambda i: (-first[i].reward, i))[:2]
        round2 = [c for c in trace.candidates if c.round == 2]
        assert sorted({c.parent for c in round2}) == sorted(i for i in kept if not first[i].done)
        for c in round2:
            parent = trace.candidates[c.parent].text
            assert c.text.startswith(parent.rstrip("\n") + "\n") or c.done
        assert trace.selected is not None and trace.candidates[trace.selected].round == 2


@pytest.mark.parametrize("select", ["first", "argmax", "majority", "weighted_vote"])
def test_selection_rules_in_a_run(tmp_path, tiny_model_dir, session, select):
    records = [{"id": f"q{i}", "question": f"pick {i}", "answer": "2", "solution": "", "a": "2", "b": "2.5", "c": "2",
                "split": "dev"}
               for i in range(3)]
    extra = (f'reward r = external(call = "{FIXTURES / "scores.py"}:value", timeout = 10)\n'
             'generator pick = candidates(["a", "b", "c"], seed = 0)')
    path = make_program(tmp_path, tiny_model_dir, records=records, extra=extra,
                        flow=f"samples = 3, reward = r, select = {select}")
    path.write_text(path.read_text().replace("generator = g,", "generator = pick,"))
    result = aldsl.compile(path).run(split="dev", session=session)
    for trace in result.traces:
        answers = [c.text for c in trace.candidates]
        assert sorted(answers) == ["2", "2", "2.5"]
        if select == "first":
            assert trace.answer == answers[0]
        elif select == "argmax":
            assert trace.answer == "2.5"  # the reward is the number itself
        else:
            assert trace.answer == "2"  # two votes (majority); softmax weights 2 e^2 > e^2.5 (weighted vote)


@pytest.mark.parametrize("func", ["external_funcs.py:raises", "scores.py:text", "external_funcs.py:hangs"])
def test_failing_external_rewards_never_abort(tmp_path, tiny_model_dir, session, func):
    reward = f'reward r = external(call = "{FIXTURES / func}", timeout = 1, on_error = -1)'
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, extra=reward, flow="samples = 2, reward = r, select = argmax"))
    result = prog.run(split="dev", limit=2, session=session)
    for trace in result.traces:
        assert all(c.reward == -1 and c.error for c in trace.candidates)
        assert trace.selected == 0 and "acc" in trace.scores


def test_traces_export_as_jsonl(tmp_path, tiny_model_dir, session):
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, flow="samples = 2"))
    result = prog.run(split="dev", limit=3, session=session)
    path = result.to_jsonl(tmp_path / "out" / "traces.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in rows] == [t.id for t in result.traces]
    assert rows[0]["prompts"][0]["round"] == 1 and len(rows[0]["candidates"]) == 2
    assert rows[0]["scores"]["acc"] in (0.0, 1.0) and "answer" in rows[0]


def test_python_api_runs_plain_inputs(tmp_path, tiny_model_dir, session):
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir))
    result = prog.run(["What is 2 + 2?", {"x": "What is 3 + 3?", "id": "mine"}], session=session)
    assert [t.id for t in result.traces] == ["0", "mine"]
    assert result.scores == {} and all(t.candidates for t in result.traces)
    with pytest.raises(UserError, match="must be a string or a dict"):
        prog.run([42], session=session)


def test_demos_never_include_the_query_itself(tmp_path, tiny_model_dir, session):
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, prompter="template = direct, demos = demos(d.train, k = 3, pick = nearest)"))
    result = prog.run(split="train", session=session)
    for trace in result.traces:
        prompt = trace.prompts[0]["prompt"]
        assert prompt.count("Q: ") == 3 and f"Q: {trace.x}\n" not in prompt


def test_missing_template_slot_is_a_user_error(tmp_path, tiny_model_dir, session):
    with pytest.raises(AlpError, match=r"slot \{unit\} is neither a record field"):
        aldsl.compile(make_program(tmp_path, tiny_model_dir, prompter="template = mine",
                                   extra='template mine = text("{x} in {unit}")'))
    # a field the data has but a run's own input lacks is found when that input is prompted
    prog = aldsl.compile(make_program(tmp_path, tiny_model_dir, prompter="template = mine",
                                      extra='template mine = text("{x} after {solution}")'))
    with pytest.raises(UserError, match=r"uses the slot \{solution\}"):
        prog.run(["What is 2 + 2?"], session=session)


def test_cli_run_prints_scores_and_writes_traces(tmp_path, tiny_model_dir, capsys, isolated_cache):
    path = make_program(tmp_path, tiny_model_dir, flow="samples = 2")
    out = tmp_path / "results.jsonl"
    rc = main(["run", str(path), "--split", "dev", "--limit", "3", "--out", str(out), "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "acc" in text and "3 queries" in text and "tok/s" in text
    assert len(out.read_text().splitlines()) == 3
    rc = main(["run", str(path), "--split", "validation"])
    assert rc == 2 and "no split 'validation'" in capsys.readouterr().err
