"""Bradley-Terry reward model (Eq. 4) from preference pairs (x, y+, y-).

Pairs come from the records' ``chosen``/``rejected`` fields, or, with ``annotator``, from the
generator's own samples: ``samples`` per train query, each scored by the annotator evaluator (it
sees only this split), the best paired against every sample with a lower score. A head on the
features is fitted by ``-log sigmoid(r+ - r- - margin) + centering * (r+ + r-)^2``. Held-out
metric: pairwise accuracy on the pairs of held-out queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aldsl.compiler.specs import Reward
from aldsl.errors import UserError
from aldsl.ops.sampling import sample
from aldsl.rewards.features import Features, feature_text
from aldsl.rewards.heads import load_head, pairwise_accuracy, save_head, train_pairwise
from aldsl.rewards.trained import (HeadReward, ensure_artifact, feature_generator, generator_identity, golden_scores, head_config,
                      held_mask, holdout_ids, rounded, sampler, training_records)

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

Pair = tuple[dict[str, Any], str, str]  # (record, chosen, rejected)


def build(spec: Reward, session: Session, graph: ProgramGraph) -> HeadReward:
    records = training_records(spec, session, graph)
    features = Features(spec["features"], session, feature_generator(spec.generator), graph)

    def fit(folder: Path) -> dict[str, Any]:
        pairs = annotated_pairs(spec, session, graph, records) if spec.annotator else field_pairs(spec, records)
        if not pairs:
            raise UserError(f"reward {spec.name!r}: no preference pairs (every query's samples scored the same "
                            "under the annotator); raise samples or temperature")
        chosen = features.embed([feature_text(r["x"], c) for r, c, _ in pairs])
        rejected = features.embed([feature_text(r["x"], c) for r, _, c in pairs])
        held = held_mask([str(r["id"]) for r, _, _ in pairs], holdout_ids(records))
        config = head_config(spec)
        metrics = {}
        if held.any() and (~held).any():
            probe, _ = train_pairwise(chosen[~held], rejected[~held], config, spec["margin"], spec["centering"])
            metrics["pairwise_accuracy"] = pairwise_accuracy(probe.predict(chosen[held]), probe.predict(rejected[held]))
            metrics["held_out_pairs"] = int(held.sum())
        head, losses = train_pairwise(chosen, rejected, config, spec["margin"], spec["centering"])
        metrics["train_pairwise_accuracy"] = pairwise_accuracy(head.predict(chosen), head.predict(rejected))
        save_head(head, folder)
        return {"metrics": rounded(metrics), "pairs": len(pairs), "final_loss": round(losses[-1], 5)}

    identities = [generator_identity(session, spec.generator, graph), features.identity]
    head, meta = ensure_artifact(spec, session, records, identities, fit, load_head)
    return HeadReward(spec.name, features, head, meta["metrics"])


def field_pairs(spec: Reward, records: Sequence[dict[str, Any]]) -> list[Pair]:
    """(record, record[chosen], record[rejected]) for every record."""
    pairs = []
    for r in records:
        for field in (spec["chosen"], spec["rejected"]):
            if r.get(field) is None:
                raise UserError(f"reward {spec.name!r}: record {r['id']!r} has no field {field!r}; set chosen/rejected "
                                "to the fields holding the two responses, or give an annotator to rank samples")
        pairs.append((r, str(r[spec["chosen"]]), str(r[spec["rejected"]])))
    return pairs


def annotated_pairs(spec: Reward, session: Session, graph: ProgramGraph,
                    records: Sequence[dict[str, Any]]) -> list[Pair]:
    """The best of each query's samples under the annotator against every sample it beats (with a
    0/1 annotator: a correct sample against each incorrect one, not just one of them)."""
    assert spec.prompter is not None
    thoughts = sample(session, graph, spec.prompter, sampler(spec), records, spec["samples"], spec["temperature"])
    owners = [r for r, ts in zip(records, thoughts) for _ in ts]
    scores = golden_scores(session, spec.annotator, spec.answer, [t for ts in thoughts for t in ts], owners, graph)
    pairs, start = [], 0
    for record, ts in zip(records, thoughts):
        s = np.asarray(scores[start:start + len(ts)])
        start += len(ts)
        best = int(s.argmax())
        pairs += [(record, ts[best], ts[j]) for j in np.flatnonzero(s < s[best])]
    return pairs
