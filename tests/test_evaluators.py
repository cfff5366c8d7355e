"""Evaluators on hand-made cases, and parameter validation."""

import pytest

import inspect
from pathlib import Path

import aldsl
from aldsl.evaluators.builtin import EVALUATORS, EvaluatorError
from aldsl.evaluators.builtin import score as evaluate
from aldsl.language.diagnostics import AlpError
from aldsl.language.schema import BY_KIND
from aldsl.language.schema import REQUIRED as REQUIRED_DEFAULT

DATA = Path(__file__).resolve().parents[1] / "programs" / "data" / "arith.jsonl"
RECORDS = [{"id": "a", "y": "Paris"}, {"id": "b", "y": "8"}, {"id": "c", "y": "New  York", "alt": "NYC"}]


def test_exact_match_trims_whitespace_punctuation_and_case() -> None:
    answers = [" paris. ", "8.0", "new york!"]
    assert evaluate("exact_match", answers, RECORDS) == [1.0, 0.0, 1.0]
    assert evaluate("exact_match", answers, RECORDS, {"ignore_case": False}) == [0.0, 0.0, 0.0]
    assert evaluate("exact_match", ["NYC", "York"], [RECORDS[2]] * 2, {"field": "alt"}) == [1.0, 0.0]


def test_numeric_match() -> None:
    records = [{"y": "8"}, {"y": "1,200"}, {"y": "2.5"}, {"y": "3"}, {"y": "no number"}]
    answers = ["3 + 5 = 8.\nThe answer is 8.00", "#### 1200", "2.50001", "I am not sure", "7"]
    assert evaluate("numeric_match", answers, records) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert evaluate("numeric_match", answers[2:3], records[2:3], {"tol": 1e-3}) == [1.0]


def test_regex_and_contains() -> None:
    assert evaluate("regex", ["def f(): pass", "x = 1"], [{}, {}], {"pattern": r"^def \w+"}) == [1.0, 0.0]
    records = [{"y": "blue whale"}, {"y": "Blue"}]
    assert evaluate("contains", ["The BLUE   whale is big", "red"], records) == [1.0, 0.0]
    assert evaluate("contains", ["the blue whale", "Blue sky"], records, {"ignore_case": False}) == [1.0, 1.0]
    assert evaluate("contains", ["the Blue whale", "blue sky"], records, {"ignore_case": False}) == [0.0, 0.0]


def test_sentiment_orders_and_mirrors() -> None:
    answers = ["This is wonderful, I love it! Excellent quality.", "The weather is cloudy.",
               "Terrible, broke after a day. I hate it."]
    pos = evaluate("sentiment", answers, [{}] * 3)
    neg = evaluate("sentiment", answers, [{}] * 3, {"target": "negative"})
    assert pos[0] > 0.9 and pos[2] < 0.1 and pos[1] == pytest.approx(0.5)
    assert all(0.0 <= s <= 1.0 for s in pos)
    assert neg == pytest.approx([1 - s for s in pos])
    with pytest.raises(EvaluatorError, match="'positive' or 'negative'"):
        evaluate("sentiment", answers, [{}] * 3, {"target": "happy"})


def test_parameter_validation_messages() -> None:
    with pytest.raises(EvaluatorError, match="unknown evaluator 'exact'.*exact_match"):
        evaluate("exact", ["x"], [{"y": "x"}])
    with pytest.raises(EvaluatorError, match="invalid pattern"):
        evaluate("regex", ["x"], [{}], {"pattern": "("})
    with pytest.raises(EvaluatorError, match="2 answers for 1 records"):
        evaluate("exact_match", ["x", "y"], [{"y": "x"}])


@pytest.mark.parametrize("decl, message", [
    ("numeric_match(tolerance = 0.1)", "numeric_match\\(\\) has no parameter 'tolerance'(.|\\n)*takes: field, tol"),
    ("regex()", "regex\\(\\) needs 'pattern'"),
    ("exact_match(ignore_case = 1)", "expected true or false for 'ignore_case'"),
    ("numeric_match(tol = \"small\")", "expected a number for 'tol'"),
])
def test_parameters_are_checked_by_the_language(decl: str, message: str) -> None:
    source = f"""program p
data d = jsonl("{DATA}", input = "question", target = "answer")
generator g = model("smollm2-135m")
prompter q = prompt()
evaluator e = {decl}
flow main = loop(d, generator = g, prompter = q, evaluator = e)
"""
    with pytest.raises(AlpError, match=message):
        aldsl.compile(source)


def test_missing_or_null_target_field() -> None:
    with pytest.raises(EvaluatorError, match="record 'q1' has no field 'answer'.*id, y"):
        evaluate("exact_match", ["x"], [{"id": "q1", "y": "x"}], {"field": "answer"})
    with pytest.raises(EvaluatorError, match="no target in field 'y'"):
        evaluate("numeric_match", ["1"], [{"id": "q1", "y": None}])


def test_the_schema_is_the_one_parameter_system() -> None:
    """Every built-in evaluator takes exactly the parameters its constructor declares, with the same defaults,
    and every evaluator constructor of the language has an implementation."""
    declared = BY_KIND["evaluator"]
    for kind, fn in EVALUATORS.items():
        signature = list(inspect.signature(fn).parameters.values())[2:]  # after answers, records
        params = {p.name: p.default for p in declared[kind].params}
        assert {p.name: (p.default if p.default is not inspect.Parameter.empty else None) for p in signature} == \
            {n: (None if d is REQUIRED_DEFAULT else d) for n, d in params.items()}, kind
    assert set(declared) == set(EVALUATORS) | {"code_tests", "external", "judge"}
