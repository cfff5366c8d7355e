"""The built-in evaluators: pure functions of (answers, records) with scores in [0, 1].

Every evaluator is ``fn(answers, records, **params) -> list[float]`` with one score per answer;
its parameters and their defaults are declared once, in the language schema
(``aldsl.language.schema``), which the checker validates programs against.
"""

from __future__ import annotations

import math
import re
import string
from functools import lru_cache
from aldsl.errors import UserError, require_extra
from typing import Any, Callable, Mapping, Sequence

from aldsl.ops.answers import extract


class EvaluatorError(UserError, ValueError):
    """A user error in an evaluator's use: unknown kind or parameter, missing field, bad value."""


Evaluator = Callable[..., list[float]]

_TRIM = string.whitespace + string.punctuation


def _field(record: Mapping[str, Any], field: str) -> str:
    if field not in record:
        fields = ", ".join(sorted(record)) or "none"
        raise EvaluatorError(
            f"record {record.get('id', '?')!r} has no field {field!r} to compare with "
            f"(its fields: {fields}); set the evaluator's field parameter to one of them"
        )
    value = record[field]
    if value is None:
        raise EvaluatorError(
            f"record {record.get('id', '?')!r} has no target in field {field!r} (it is null); "
            "give the data source a target field or use an evaluator that needs none"
        )
    return str(value)


def _canon(text: str, ignore_case: bool) -> str:
    text = " ".join(text.split()).strip(_TRIM)
    return text.casefold() if ignore_case else text


def exact_match(
    answers: Sequence[str], records: Sequence[Mapping[str, Any]], field: str = "y", ignore_case: bool = True
) -> list[float]:
    """1 where the answer equals the record's ``field`` (whitespace and edge punctuation ignored)."""
    return [
        float(_canon(a, ignore_case) == _canon(_field(r, field), ignore_case)) for a, r in zip(answers, records)
    ]


def numeric_match(
    answers: Sequence[str], records: Sequence[Mapping[str, Any]], field: str = "y", tol: float = 1e-6
) -> list[float]:
    """1 where the final numbers of answer and ``field`` differ by at most ``tol`` (0 if either has none)."""
    scores = []
    for answer, record in zip(answers, records):
        got, want = extract("number", answer), extract("number", _field(record, field))
        scores.append(float(bool(got) and bool(want) and abs(float(got) - float(want)) <= tol))
    return scores


@lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise EvaluatorError(f"evaluator 'regex' has an invalid pattern {pattern!r}: {exc}") from None


def regex(answers: Sequence[str], records: Sequence[Mapping[str, Any]], pattern: str) -> list[float]:
    """1 where ``pattern`` matches somewhere in the answer."""
    compiled = _compile(pattern)
    return [float(compiled.search(a) is not None) for a in answers]


def contains(
    answers: Sequence[str], records: Sequence[Mapping[str, Any]], field: str = "y", ignore_case: bool = True
) -> list[float]:
    """1 where the answer contains the record's ``field`` (whitespace-normalised)."""
    scores = []
    for answer, record in zip(answers, records):
        want = _canon(_field(record, field), ignore_case)
        got = " ".join(answer.split())
        scores.append(float(want in (got.casefold() if ignore_case else got)))
    return scores


@lru_cache(maxsize=1)
def _vader() -> Any:
    vader = require_extra("vaderSentiment.vaderSentiment", "sentiment", "the sentiment evaluator")
    return vader.SentimentIntensityAnalyzer()


def sentiment(
    answers: Sequence[str], records: Sequence[Mapping[str, Any]], target: str = "positive"
) -> list[float]:
    """VADER compound score mapped to [0, 1]; for target "negative" its mirror (1 - score)."""
    if target not in ("positive", "negative"):
        raise EvaluatorError(f"evaluator 'sentiment' target must be 'positive' or 'negative', got {target!r}")
    analyzer = _vader()
    scores = [(analyzer.polarity_scores(a)["compound"] + 1.0) / 2.0 for a in answers]
    return scores if target == "positive" else [1.0 - s for s in scores]


EVALUATORS: dict[str, Evaluator] = {
    "exact_match": exact_match,
    "numeric_match": numeric_match,
    "regex": regex,
    "contains": contains,
    "sentiment": sentiment,
}


def score(kind: str, answers: Sequence[str], records: Sequence[Mapping[str, Any]],
          params: Mapping[str, Any] | None = None) -> list[float]:
    """Scores in [0, 1] of ``answers`` against ``records`` with the built-in evaluator ``kind``; its
    parameters were checked against the language schema when the program was checked."""
    if kind not in EVALUATORS:
        raise EvaluatorError(f"unknown evaluator {kind!r}; the built-in evaluators are: {', '.join(EVALUATORS)}")
    if len(answers) != len(records):
        raise EvaluatorError(f"evaluator {kind!r} got {len(answers)} answers for {len(records)} records")
    scores = EVALUATORS[kind](list(answers), list(records), **dict(params or {}))
    return [s if math.isfinite(s) else 0.0 for s in scores]
