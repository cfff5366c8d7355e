"""Outcome reward model (ORM, Eq. 8-9): P(correct | x, y) from the generator's own samples.

``samples`` candidates per train query, sampled at ``temperature`` with the flow's prompter, are
labelled by the task's golden check (the evaluator on the extracted answer, train split only); a
head on their features is fitted by BCE and r = logit R(x, y). Held-out metrics: AUC, and the
golden accuracy of best-of-L selection by r against the first sample, majority vote and pass@L.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aldsl.compiler.specs import Reward
from aldsl.ops.answers import extract
from aldsl.rewards.features import Features, feature_text
from aldsl.rewards.heads import auc, load_head, save_head
from aldsl.rewards.trained import (HeadReward, by_query, ensure_artifact, feature_generator, generator_identity,
                      head_config, held_mask, holdout_ids, probe_and_fit, rounded, sample_graded, selection_metrics,
                      training_records)

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session


def build(spec: Reward, session: Session, graph: ProgramGraph) -> HeadReward:
    records = training_records(spec, session, graph)
    features = Features(spec["features"], session, feature_generator(spec.generator), graph)

    def fit(folder: Path) -> dict[str, Any]:
        _, owners, texts, golden = sample_graded(spec, session, graph, records)
        x = features.embed([feature_text(r["x"], t) for r, t in zip(owners, texts)])
        held = held_mask([str(r["id"]) for r in owners], holdout_ids(records))
        r_held, head, losses = probe_and_fit(x, golden, held, head_config(spec))
        save_head(head, folder)
        answers = [extract(spec.answer.kind, t, spec.answer.arg) for t in texts]
        metrics = {"auc": auc(r_held, np.asarray(golden)[held]),
                   **selection_metrics(by_query(owners, held, r_held, golden, answers))}
        return {"metrics": rounded(metrics), "examples": len(texts),
                "positive_rate": round(float(np.mean(np.asarray(golden) >= 0.5)), 4), "final_loss": round(losses[-1], 5)}

    identities = [generator_identity(session, spec.generator, graph), features.identity]
    head, meta = ensure_artifact(spec, session, records, identities, fit, load_head)
    return HeadReward(spec.name, features, head, meta["metrics"])

