"""The evaluator E: scores in [0, 1] for a batch of answers against their records.

Every evaluator is ``fn(answers, records, **params) -> list[float]`` with one score per
answer. ``PARAMS`` describes each kind's parameters and defaults (``REQUIRED`` marks a
parameter without default) so the language checker can validate programs; ``evaluate``
validates parameters and then scores. Other modules add kinds with ``register``.
"""

from __future__ import annotations

import math
import re
import string
from functools import lru_cache
from aldsl.errors import UserError
from typing import Any, Callable, Mapping, Sequence

from aldsl.ops.answers import extract


class EvaluatorError(UserError, ValueError):
    """A user error in an evaluator's use: unknown kind or parameter, missing field, bad value."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""Default value marking a parameter that a program must give."""

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


def regex(answers: Sequence[str], records: Sequence[Mapping[str, Any]], pattern: str = REQUIRED) -> list[float]:
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
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


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

PARAMS: dict[str, dict[str, Any]] = {
    "exact_match": {"field": "y", "ignore_case": True},
    "numeric_match": {"field": "y", "tol": 1e-6},
    "regex": {"pattern": REQUIRED},
    "contains": {"field": "y", "ignore_case": True},
    "sentiment": {"target": "positive"},
}


def register(kind: str, fn: Evaluator, params: Mapping[str, Any]) -> None:
    """Add evaluator ``kind`` (e.g. code tests, an external command, an LLM judge) with its parameters."""
    if kind in EVALUATORS:
        raise EvaluatorError(f"evaluator {kind!r} is already registered; pick another name")
    EVALUATORS[kind] = fn
    PARAMS[kind] = dict(params)


def _check_type(kind: str, name: str, value: Any, default: Any) -> None:
    if default is REQUIRED or default is None:
        return
    expected: tuple[type, ...] = (int, float) if isinstance(default, float) else (type(default),)
    if (isinstance(value, bool) and bool not in expected) or not isinstance(value, expected):
        raise EvaluatorError(
            f"evaluator {kind!r} parameter {name!r} must be {type(default).__name__} "
            f"(default {default!r}), got {value!r}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise EvaluatorError(f"evaluator {kind!r} parameter {name!r} must be finite, got {value!r}")


def check_params(kind: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The full parameter set of ``kind`` (defaults filled in); raises EvaluatorError on a bad one."""
    if kind not in EVALUATORS:
        raise EvaluatorError(f"unknown evaluator {kind!r}; valid evaluators: {', '.join(sorted(EVALUATORS))}")
    spec = PARAMS[kind]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise EvaluatorError(
            f"evaluator {kind!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters: {', '.join(spec) or 'none'}"
        )
    full = {name: params.get(name, default) for name, default in spec.items()}
    missing = [name for name, value in full.items() if value is REQUIRED]
    if missing:
        raise EvaluatorError(f"evaluator {kind!r} needs parameter {', '.join(map(repr, missing))}")
    for name, value in params.items():
        _check_type(kind, name, value, spec[name])
    return full


def evaluate(
    kind: str, answers: Sequence[str], records: Sequence[Mapping[str, Any]], params: Mapping[str, Any] | None = None
) -> list[float]:
    """Scores in [0, 1] of ``answers`` against ``records`` with evaluator ``kind``."""
    full = check_params(kind, params or {})
    if len(answers) != len(records):
        raise EvaluatorError(f"evaluator {kind!r} got {len(answers)} answers for {len(records)} records")
    return EVALUATORS[kind](list(answers), list(records), **full)
