"""Bradley-Terry reward model (Eq. 4) from preference pairs (x, y+, y-).

Pairs come from the records' ``chosen``/``rejected`` fields, or, with ``annotator``, from the
generator's own samples: ``samples`` per train query, each scored by the annotator evaluator (it
sees only this split), the best paired against every sample with a lower score. The reward (an LM
backbone or a head on frozen features) is fitted by ``-log sigmoid(r+ - r- - margin) +
centering * (r+ + r-)^2``. Held-out
metric: pairwise accuracy on the pairs of held-out queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aldsl.compiler.specs import Reward
from aldsl.errors import UserError
from aldsl.ops.sampling import sample
from aldsl.rewards.heads import pairwise_accuracy
from aldsl.rewards.trained import (Learner, Scorer, golden_scores, held_mask, holdout_ids, rounded,
                                   sampler, training_records)

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

Pair = tuple[dict[str, Any], str, str]  # (record, chosen, rejected)


def build(spec: Reward, session: Session, graph: ProgramGraph) -> Scorer:
    records = training_records(spec, session, graph)
    learner = Learner(spec, session, graph)

    def fit(folder: Path) -> dict[str, Any]:
        pairs = annotated_pairs(spec, session, graph, records) if spec.annotator else field_pairs(spec, records)
        if not pairs:
            raise UserError(f"reward {spec.name!r}: no preference pairs (every query's samples scored the same "
                            "under the annotator); raise samples or temperature")
        texts = [(r["x"], c) for r, chosen, rejected in pairs for c in (chosen, rejected)]
        held = held_mask([str(r["id"]) for r, _, _ in pairs], holdout_ids(records))
        a, b, info = learner.pairs(folder, texts, [(2 * i, 2 * i + 1) for i in range(len(pairs))], held)
        metrics = {}
        if len(a):
            metrics = {"pairwise_accuracy": pairwise_accuracy(a, b), "held_out_pairs": int(held.sum())}
        return {"metrics": rounded({**metrics, **info.pop("metrics", {})}), "pairs": len(pairs), **info}

    return learner.ensure(records, fit)


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
