"""Seeded task data: arithmetic problems, preference pairs, reviews, judge records, the build."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from aldsl.tasks.arith import apply, check, make_preferences, make_problems
from aldsl.tasks.build import build
from aldsl.tasks.judge import INSTRUCTION, make_judgements
from aldsl.tasks.reviews import make_reviews

DATA = Path(__file__).resolve().parents[1] / "programs" / "data"
STEP_LINE = re.compile(r"^(?P<text>[^:]+): (?P<left>\d+) (?P<op>[-+*/]) (?P<right>\d+) = (?P<result>\d+)\.$")
FINAL_LINE = re.compile(r"^The answer is (\d+)\.$")


def shipped(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


def equations(solution: str) -> list[re.Match[str]]:
    lines = solution.split("\n")
    matches = [STEP_LINE.match(line) for line in lines[:-1]]
    assert all(matches), solution
    assert FINAL_LINE.match(lines[-1]), solution
    return matches  # type: ignore[return-value]


def holds(eq: re.Match[str]) -> bool:
    left, right, result = int(eq["left"]), int(eq["right"]), int(eq["result"])
    try:
        return apply(left, eq["op"], right) == result
    except ValueError:
        return False


def final_answer(solution: str) -> int:
    match = FINAL_LINE.match(solution.split("\n")[-1])
    assert match
    return int(match.group(1))


@pytest.fixture(scope="module")
def arith() -> list[dict]:
    return shipped("arith.jsonl")


def test_solutions_compute_the_answer(arith: list[dict]) -> None:
    for record in arith:
        eqs = equations(record["solution"])
        assert len(eqs) == record["steps"]
        assert all(holds(eq) for eq in eqs), record
        assert int(eqs[-1]["result"]) == int(record["answer"]) == final_answer(record["solution"])
        for previous, eq in zip(eqs, eqs[1:]):  # each later step starts from the previous result
            assert eq["left"] == previous["result"], record
        question_numbers = re.findall(r"\d+", record["question"])
        for eq in eqs:
            assert eq["right"] in question_numbers, record


def test_numbers_are_small_non_negative_integers(arith: list[dict]) -> None:
    for record in arith:
        for eq in equations(record["solution"]):
            assert 2 <= int(eq["right"]) <= 50
            assert 0 <= int(eq["result"]) < 500
            if eq["op"] == "*":
                assert int(eq["left"]) * int(eq["right"]) < 500


def test_step_mix_variety_and_uniqueness(arith: list[dict]) -> None:
    assert Counter(r["steps"] for r in arith) == {1: 400, 2: 400, 3: 200}
    assert len({r["question"] for r in arith}) == len(arith)
    assert len({r["id"] for r in arith}) == len(arith)
    ops = Counter(eq["op"] for r in arith for eq in equations(r["solution"]))
    assert all(ops[op] >= 50 for op in "+-*/"), ops
    text = " ".join(r["question"] for r in arith)
    for phrase in ("buys", "more", "gives", "eats", "loses", "sells", "in each", "costs", "equally"):
        assert phrase in text
    assert len({r["question"].split()[0] for r in arith}) >= 20  # varied names


def test_make_problems_is_deterministic_and_respects_exclude() -> None:
    first = make_problems(40, seed=7)
    assert first == make_problems(40, seed=7)
    assert first != make_problems(40, seed=8)
    assert Counter(r["steps"] for r in first) == {1: 16, 2: 16, 3: 8}
    taken = {r["question"] for r in first}
    assert not taken & {r["question"] for r in make_problems(200, seed=7, exclude=taken)}


def test_check() -> None:
    record = {"answer": "1200"}
    assert check("3 * 400 = 1200.\nThe answer is 1,200.", record)
    assert not check("The answer is 1201.", record)
    assert not check("I do not know.", record)


@pytest.fixture(scope="module")
def prefs() -> list[dict]:
    return shipped("prefs_arith.jsonl")


def template(solution: str) -> str:
    return re.sub(r"\d+", "N", solution)


def test_preferences_reject_a_plausible_wrong_solution(prefs: list[dict]) -> None:
    kinds = Counter()
    for pair in prefs:
        chosen, rejected = pair["chosen"], pair["rejected"]
        assert final_answer(chosen) == int(pair["answer"]) != final_answer(rejected)
        assert template(chosen) == template(rejected)  # same format, same wording
        good, bad = equations(chosen), equations(rejected)
        assert all(holds(eq) for eq in good)
        wrong = [i for i, eq in enumerate(bad) if not holds(eq)]
        if wrong:  # one slip; the later steps carry the wrong value on correctly
            assert len(wrong) == 1
            assert int(bad[-1]["result"]) == final_answer(rejected)
            kinds["slip"] += 1
        else:  # right equations, wrong final line
            assert [eq.group(0) for eq in good] == [eq.group(0) for eq in bad]
            kinds["final"] += 1
    assert kinds["slip"] > 300 and kinds["final"] > 50, kinds


def test_preferences_are_not_separable_by_length(prefs: list[dict]) -> None:
    longer = sum(len(p["rejected"]) > len(p["chosen"]) for p in prefs)
    shorter = sum(len(p["rejected"]) < len(p["chosen"]) for p in prefs)
    assert abs(longer - shorter) < 0.15 * len(prefs)
    mean_gap = sum(len(p["rejected"]) - len(p["chosen"]) for p in prefs) / len(prefs)
    assert abs(mean_gap) < 0.5


def test_preferences_and_judge_never_contain_arith_questions(arith: list[dict], prefs: list[dict]) -> None:
    questions = {r["question"] for r in arith}
    assert not questions & {p["prompt"] for p in prefs}
    assert not questions & {r["question"] for r in shipped("judge.jsonl")}


def test_make_preferences_is_deterministic() -> None:
    assert make_preferences(20, seed=3) == make_preferences(20, seed=3)
    assert make_preferences(20, seed=3) != make_preferences(20, seed=4)


def test_judge_labels_are_balanced_and_correct() -> None:
    records = shipped("judge.jsonl")
    assert Counter(r["label"] for r in records) == {"yes": 300, "no": 300}
    for r in records:
        assert r["label"] == ("yes" if r["proposed"] == r["answer"] else "no")
        assert int(r["proposed"]) >= 0
        assert r["query"] == f"Question: {r['question']}\nProposed answer: {r['proposed']}\n{INSTRUCTION}"
    odd = make_judgements(21, seed=5)
    assert Counter(r["label"] for r in odd) == {"yes": 10, "no": 11}
    assert odd == make_judgements(21, seed=5)


def test_reviews() -> None:
    records = shipped("reviews.jsonl")
    assert len(records) == 300
    assert len({r["product"] for r in records}) == 300
    assert all(r["prompt"] == f"Write a short positive review of {r['product']}." for r in records)
    assert make_reviews(10, seed=1) == make_reviews(10, seed=1) != make_reviews(10, seed=2)
    with pytest.raises(ValueError, match="distinct products"):
        make_reviews(10**6, seed=0)


def test_committed_files_equal_a_fresh_build(tmp_path: Path) -> None:
    paths = build(tmp_path)
    assert set(paths) == {"arith.jsonl", "prefs_arith.jsonl", "reviews.jsonl", "judge.jsonl"}
    for name, path in paths.items():
        assert path.read_bytes() == (DATA / name).read_bytes(), f"{name} is stale: run python -m aldsl.tasks.build"
