"""Outcome reward model (ORM, Eq. 8-9): P(correct | x, y) from the generator's own samples.

``samples`` candidates per train query, sampled at ``temperature`` with the flow's prompter, are
labelled by the task's golden check (the evaluator on the extracted answer, train split only); the
reward is fitted by BCE and r = logit R(x, y), on an LM backbone or as a head on frozen features
(:class:`aldsl.rewards.trained.Learner`). Held-out metrics: AUC, and the golden accuracy of best-of-L
selection by r against the first sample, majority vote and pass@L.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aldsl.compiler.specs import Reward
from aldsl.ops.answers import extract
from aldsl.rewards.heads import auc
from aldsl.rewards.trained import (Learner, Scorer, by_query, held_mask, holdout_ids, rounded,
                                   sample_graded, selection_metrics, training_records)

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session


def build(spec: Reward, session: Session, graph: ProgramGraph) -> Scorer:
    records = training_records(spec, session, graph)
    learner = Learner(spec, session, graph)

    def fit(folder: Path) -> dict[str, Any]:
        _, owners, texts, golden = sample_graded(spec, session, graph, records)
        held = held_mask([str(r["id"]) for r in owners], holdout_ids(records))
        r_held, info = learner.points(folder, [(r["x"], t) for r, t in zip(owners, texts)], [[g] for g in golden], held)
        r_held = np.array([r[-1] for r in r_held])
        answers = [extract(spec.answer.kind, t, spec.answer.arg) for t in texts]
        metrics = {"auc": auc(r_held, np.asarray(golden)[held]),
                   **selection_metrics(by_query(owners, held, r_held, golden, answers))}
        return {"metrics": rounded(metrics), "examples": len(texts),
                "positive_rate": round(float(np.mean(np.asarray(golden) >= 0.5)), 4), **info}

    return learner.ensure(records, fit)
