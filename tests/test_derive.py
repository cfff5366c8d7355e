"""Worked solutions derived from golden answers: the search over the question's numbers, its
preferences and what it refuses; and ``sft(..., solutions = arithmetic)`` on a tiny model."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

import aldsl
from aldsl.errors import NothingToLearn, UserError
from aldsl.runtime.session import Session
from aldsl.store.derive import MAX_NUMBERS, derive, numbers, parse_answer


def solution(question: str, answer: str) -> str | None:
    found = derive(question, answer)
    return found.text(answer) if found else None


def test_a_two_step_chain_is_found_and_written_as_equations():
    q = "Every week a student puts 11 coins in a jar. After 8 weeks the student takes out 60 coins. How many are left?"
    assert solution(q, "28") == "11 * 8 = 88. 88 - 60 = 28. The answer is 28."
    assert derive(q, "28").candidates == 1


def test_three_steps_and_a_tree_of_two_products():
    q = "A shop sells 4 boxes of 6 pens and 3 boxes of 5 pencils. How many items?"
    assert solution(q, "39") == "4 * 6 = 24. 3 * 5 = 15. 24 + 15 = 39. The answer is 39."


def test_every_number_is_preferred_then_fewer_steps_then_the_question_order():
    # 2 + 6 = 8, 8 / 2 = 4 uses all three numbers; 6 - 2 = 4 and 2 * 2 = 4 use two and lose
    assert solution("A bakery bakes 2 loaves and 6 more. It packs them 2 to a crate. Crates?", "4") == \
        "2 + 6 = 8. 8 / 2 = 4. The answer is 4."
    # both use every number in one step: the question's order and the first operation decide, and it counts
    found = derive("Tom has 2 apples and gets 2 more. How many?", "4")
    assert found.text("4") == "2 + 2 = 4. The answer is 4." and found.candidates == 2


def test_commuted_steps_are_one_candidate():
    found = derive("Sam has 3 red and 5 blue marbles. How many?", "8")
    assert found.candidates == 1 and found.text("8") == "3 + 5 = 8. The answer is 8."


def test_no_negative_intermediate_no_inexact_division_no_identities():
    assert solution("Ann has 3 pens and loses 5. How many?", "-2") is None  # negative
    assert solution("Split 10 cakes among 3 kids. Each gets?", "3.3333") is None  # 10/3 is no short decimal
    assert solution("Ann has 7 pens and 1 box.", "7") is None  # 7 * 1 is not a step
    assert solution("Share 9 cakes among 2 kids.", "4.5") == "9 / 2 = 4.5. The answer is 4.5."


def test_numbers_with_commas_decimals_and_units_in_answers():
    assert numbers("It costs $1,200.50 for 3 items, 2.5 kg.") == [Fraction("1200.50"), 3, Fraction("2.5")]
    assert parse_answer("$1,200") == 1200 and parse_answer("12 apples") == 12
    assert parse_answer("Paris") is None and parse_answer("3 or 4") is None
    assert solution("A ticket costs 2.5 dollars. How much do 4 cost?", "10") == \
        "2.5 * 4 = 10. The answer is 10."


def test_what_no_chain_reaches_is_none():
    assert derive("How many legs do three spiders have?", "24") is None  # no digits
    assert derive("Ann has 2 pens and 3 pencils.", "100") is None
    assert derive("Ann has 2 pens.", "two") is None
    many = " ".join(f"{i} apples" for i in range(2, 3 + MAX_NUMBERS))
    assert derive(many, "5") is None  # too many numbers to search


def rows(questions: list[tuple[str, str]]) -> list[dict]:
    return [{"id": f"q{i}", "question": q, "answer": a, "split": "train" if i < len(questions) - 2 else "test"}
            for i, (q, a) in enumerate(questions)]


def program(tmp_path, model_dir, records: list[dict], target: str = ', target = "answer"'):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    path = tmp_path / "derived.alp"
    path.write_text(f"""program derived "derived solutions"
data d = jsonl("data.jsonl", input = "question"{target}, split = "split")
finetune ft = sft(d.train, solutions = arithmetic, steps = 2)
generator g = model("{model_dir}", max_tokens = 8, finetune = ft)
prompter p = prompt()
evaluator acc = contains(field = "question")
flow main = loop(d, generator = g, prompter = p, evaluator = acc)
""")
    return aldsl.compile(path)


def test_sft_trains_on_the_derived_solutions_and_skips_what_none_reaches(tmp_path, tiny_model_dir, isolated_cache):
    records = rows([("Ann has 4 pens and buys 3 more. How many?", "7"), ("Ann has three pens.", "3"),
                    ("Bo has 5 bags of 2 buns. How many buns?", "10"), ("Cy has 9 cards.", "1"),
                    ("Dee has 6 cups.", "12")])
    compiled = program(tmp_path, tiny_model_dir, records)
    folder = Session().checkpoint("finetune:ft", compiled.program_graph)
    trained = [json.loads(x)["target"].strip() for x in (folder / "examples.jsonl").read_text().splitlines()]
    assert trained == ["4 + 3 = 7. The answer is 7.", "5 * 2 = 10. The answer is 10."]
    info = json.loads((folder / "meta.json").read_text())["data"]
    assert info == {"solutions": "arithmetic", "records": 3, "derived": 2, "ambiguous": 0}


def test_no_derivable_record_is_a_clear_error(tmp_path, tiny_model_dir, isolated_cache):
    compiled = program(tmp_path, tiny_model_dir, rows([("Ann has three pens.", "3"), ("Bo has a cat.", "1"),
                                                       ("x", "1"), ("y", "2")]))
    with pytest.raises(NothingToLearn, match="solutions = arithmetic found, in none of the 2 records.*rejection"):
        Session().checkpoint("finetune:ft", compiled.program_graph)


def test_derived_solutions_without_a_target_field_are_refused_at_check(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="derives worked solutions from golden answers.*no target field"):
        program(tmp_path, tiny_model_dir, rows([("Ann has 4 pens.", "4")] * 3), target=", target = none")
