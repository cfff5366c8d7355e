"""The evaluator E, in one place: ``evaluate(spec, answers, records, session, graph)`` scores a batch.

Kinds: the built-in matches (:mod:`.builtin`), ``code_tests`` (the answer's code against the
record's asserts, sandboxed), ``external`` (a user's function or command) and ``judge`` (an LLM's
P(yes) that the answer is good). Every score is in [0, 1] (an external one as its function says).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from aldsl.compiler.specs import Evaluator
from aldsl.evaluators import builtin

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

__all__ = ["evaluate"]


def evaluate(spec: Evaluator, answers: Sequence[str], records: Sequence[Mapping[str, Any]], session: Session,
             graph: ProgramGraph | None = None) -> list[float]:
    """One score per answer of the compiled evaluator ``spec``."""
    if spec.kind == "external":
        from aldsl.evaluators.external import external_scores, external_spec

        results = external_scores(external_spec(spec.name, spec.params), [str(r["x"]) for r in records], answers,
                                  records)
        return [r.score for r in results]
    if spec.kind == "judge":
        from aldsl.evaluators.judge import yes_probability

        assert spec.generator is not None and spec.template is not None
        return yes_probability(session.backend(spec.generator, graph), spec.template, [str(r["x"]) for r in records],
                               answers, records)
    if spec.kind == "code_tests":
        from aldsl.evaluators.code_tests import run_tests_many

        return run_tests_many(answers, [dict(r) for r in records], spec.params["field"], spec.params["timeout"])
    return builtin.score(spec.kind, answers, records, spec.params)
