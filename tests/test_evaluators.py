"""Evaluators on hand-made cases, and parameter validation."""

import pytest

from aldsl.evaluators.builtin import EVALUATORS, PARAMS, REQUIRED, EvaluatorError, check_params, evaluate, register

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
    with pytest.raises(EvaluatorError, match="no parameter 'tolerance'.*field, tol"):
        evaluate("numeric_match", ["1"], [{"y": "1"}], {"tolerance": 0.1})
    with pytest.raises(EvaluatorError, match="needs parameter 'pattern'"):
        evaluate("regex", ["x"], [{}])
    with pytest.raises(EvaluatorError, match="'ignore_case' must be bool"):
        evaluate("exact_match", ["x"], [{"y": "x"}], {"ignore_case": 1})
    with pytest.raises(EvaluatorError, match="'tol' must be float"):
        evaluate("numeric_match", ["1"], [{"y": "1"}], {"tol": "small"})
    with pytest.raises(EvaluatorError, match="invalid pattern"):
        evaluate("regex", ["x"], [{}], {"pattern": "("})
    with pytest.raises(EvaluatorError, match="2 answers for 1 records"):
        evaluate("exact_match", ["x", "y"], [{"y": "x"}])
    assert check_params("numeric_match", {"tol": 1}) == {"field": "y", "tol": 1}


def test_missing_or_null_target_field() -> None:
    with pytest.raises(EvaluatorError, match="record 'q1' has no field 'answer'.*id, y"):
        evaluate("exact_match", ["x"], [{"id": "q1", "y": "x"}], {"field": "answer"})
    with pytest.raises(EvaluatorError, match="no target in field 'y'"):
        evaluate("numeric_match", ["1"], [{"id": "q1", "y": None}])


def test_params_describe_every_evaluator_and_register_adds_one() -> None:
    assert set(PARAMS) == set(EVALUATORS)
    assert PARAMS["regex"]["pattern"] is REQUIRED

    def shorter_than(answers: list[str], records: list[dict], max_words: int = 3) -> list[float]:
        return [float(len(a.split()) <= max_words) for a in answers]

    register("test_shorter_than", shorter_than, {"max_words": 3})
    try:
        assert evaluate("test_shorter_than", ["a b", "a b c d"], [{}, {}]) == [1.0, 0.0]
        assert evaluate("test_shorter_than", ["a b c d"], [{}], {"max_words": 4}) == [1.0]
        with pytest.raises(EvaluatorError, match="already registered"):
            register("test_shorter_than", shorter_than, {})
    finally:
        EVALUATORS.pop("test_shorter_than")
        PARAMS.pop("test_shorter_than")
