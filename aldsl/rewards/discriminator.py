"""Discriminator reward (Inverse-RLignment, Eq. 5-7) from demonstrations (x, y*).

Positives are the demonstrations themselves (``positives = demos``) or samples of the generator
fine-tuned on them (``positives = sft``: then positives and negatives share the model's style, so
the discriminator cannot win on style alone, as the method's authors recommend); negatives are
``samples`` samples of the base generator per train query. D is fitted by balanced BCE (an LM
backbone or a head on frozen features) and the reward is r = log D - log(1 - D) = logit D. Held-out metrics: AUC of positives against
negatives, and the golden score of best-of-L selection among the negatives by r (vs the first).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aldsl.compiler.specs import Finetune, Reward
from aldsl.ops.answers import extract
from aldsl.errors import UserError
from aldsl.ops.sampling import sample
from aldsl.rewards.heads import auc
from aldsl.rewards.trained import (Learner, Scorer, by_query, golden_scores, held_mask, holdout_ids,
                                   rounded, sampler, selection_metrics, training_records)

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

SFT_SETTINGS = {"steps": 30, "lr": 5e-5, "batch": 8, "lora": False, "lora_rank": 8}


def build(spec: Reward, session: Session, graph: ProgramGraph) -> Scorer:
    records = training_records(spec, session, graph)
    learner = Learner(spec, session, graph)

    def fit(folder: Path) -> dict[str, Any]:
        demos = [r for r in records if r.get("demo") is not None and str(r["demo"]).strip()]
        if not demos:
            raise UserError(f"reward {spec.name!r}: no record of {spec.data} has a demonstration; give the data a "
                            "demo (or target) field")
        assert spec.prompter is not None
        negatives = sample(session, graph, spec.prompter, sampler(spec), demos, spec["samples"], spec["temperature"])
        positives = _positives(spec, session, graph, demos)
        rows = [(r, t, 1.0) for r, ts in zip(demos, positives) for t in ts]
        rows += [(r, t, 0.0) for r, ts in zip(demos, negatives) for t in ts]
        labels = [y for _, _, y in rows]
        held = held_mask([str(r["id"]) for r, _, _ in rows], holdout_ids(demos))
        r_held, info = learner.points(folder, [(r["x"], t) for r, t, _ in rows], [[y] for y in labels], held)
        r_held = np.array([r[-1] for r in r_held])
        metrics = {"auc": auc(r_held, np.asarray(labels)[held])}
        metrics.update(_selection(spec, session, graph, rows, held, r_held))
        return {"metrics": rounded(metrics), "positives": int(sum(labels)), "negatives": len(rows) - int(sum(labels)),
                **info}

    return learner.ensure(records, fit)


def sft_spec(spec: Reward) -> Finetune:
    """The finetune spec of ``positives = sft``: the base generator fine-tuned on the reward's demonstrations."""
    assert spec.data is not None and spec.prompter is not None
    return Finetune(f"{spec.name}_sft", "sft", spec.data, sampler(spec).base(), spec.prompter,
                    {"samples": 1, "queries": spec.get("queries", 0), **SFT_SETTINGS}, spec.evaluator, spec.answer)


def _positives(spec: Reward, session: Session, graph: ProgramGraph,
               records: Sequence[dict[str, Any]]) -> list[list[str]]:
    assert spec.prompter is not None
    if spec["positives"] == "demos":
        prefill = spec.prompter.templates[0].prefill or ""
        return [[_with_prefill(str(r["demo"]), prefill)] for r in records]
    tuned = replace(sampler(spec).base(), checkpoint=str(session.finetuned(sft_spec(spec), graph)))
    return sample(session, graph, spec.prompter, tuned, records, spec["samples"], spec["temperature"])


def _with_prefill(demo: str, prefill: str) -> str:
    """A demonstration as the generator's thoughts look: starting with the template's prefill."""
    return demo if not prefill or demo.startswith(prefill) else prefill + demo


def _selection(spec: Reward, session: Session, graph: ProgramGraph, rows: list[tuple[dict[str, Any], str, float]],
               held: np.ndarray, r_held: np.ndarray) -> dict[str, float]:
    """Best-of-L by r among the held-out queries' negatives (base samples), scored by the golden evaluator."""
    if spec.evaluator is None or spec.answer is None or spec["samples"] < 2:
        return {}
    negative = np.array([y == 0.0 for _, _, y in rows])
    keep = negative[held]
    held_neg = held & negative
    owners = [r for r, _, _ in rows]
    texts = [t for _, t, _ in rows]
    idx = np.flatnonzero(held_neg)
    golden = dict(zip(idx.tolist(), golden_scores(session, spec.evaluator, spec.answer, [texts[i] for i in idx],
                                                   [owners[i] for i in idx], graph)))
    answers = {int(i): extract(spec.answer.kind, texts[i], spec.answer.arg) for i in idx}
    full_golden = [golden.get(i, 0.0) for i in range(len(rows))]
    full_answers = [answers.get(i, "") for i in range(len(rows))]
    return selection_metrics(by_query(owners, held_neg, r_held[keep], full_golden, full_answers))
