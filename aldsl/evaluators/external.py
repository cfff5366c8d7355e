"""Scores from outside systems (a user's Python function or a command), for evaluators and rewards."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from aldsl.errors import UserError
from aldsl.isolation.external import ExternalError, ExternalItem, ExternalResult, ExternalSpec, check_external, run_external


def external_spec(name: str, params: Mapping[str, Any]) -> ExternalSpec:
    """The ExternalSpec of a compiled reward/evaluator, checked once (a bad spec is a UserError)."""
    try:
        spec = ExternalSpec(call=params.get("call"), command=params.get("command"), timeout=params["timeout"],
                            on_error=params["on_error"], base_dir=params["base_dir"])
        check_external(spec)
    except ExternalError as e:
        raise UserError(f"{name}: {e}") from None
    return spec


def external_scores(spec: ExternalSpec, xs: Sequence[str], candidates: Sequence[str],
                    records: Sequence[Mapping[str, Any]]) -> list[ExternalResult]:
    """One result per candidate (a failed call scores ``on_error`` and carries its error)."""
    return run_external(spec, [ExternalItem(x, c, dict(r)) for x, c, r in zip(xs, candidates, records)])
