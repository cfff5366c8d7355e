"""External rewards: a user's Python function or a command (failures score ``on_error``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from aldsl.errors import UserError
from aldsl.isolation.external import ExternalError, ExternalItem, ExternalSpec, check_external, run_external
from aldsl.rewards.base import RewardItem, Scored

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session


def external_spec(params: dict[str, Any]) -> ExternalSpec:
    """The ExternalSpec of a compiled reward/evaluator, checked once (a bad spec is a UserError)."""
    try:
        spec = ExternalSpec(call=params.get("call"), command=params.get("command"), timeout=params["timeout"],
                            on_error=params["on_error"], base_dir=params["base_dir"])
        check_external(spec)
    except ExternalError as e:
        raise UserError(f"{params.get('name', 'external')}: {e}") from None
    return spec


def external_scores(spec: ExternalSpec, xs: Sequence[str], candidates: Sequence[str],
                    records: Sequence[dict[str, Any]]) -> list[Scored]:
    results = run_external(spec, [ExternalItem(x, c, dict(r)) for x, c, r in zip(xs, candidates, records)])
    return [Scored(r.score, r.feedback, r.error) for r in results]


class External:
    """R given by an outside system."""

    def __init__(self, spec: dict[str, Any]):
        self.name = spec["name"]
        self.spec = external_spec(spec)

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        return external_scores(self.spec, [i.x for i in items], [i.candidate for i in items],
                               [i.record for i in items])


def build(spec: dict[str, Any], session: Session, graph: ProgramGraph) -> External:
    return External(spec)
