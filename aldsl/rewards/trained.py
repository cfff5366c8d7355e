"""What the trained reward families share: artifacts, held-out splits, labels and metrics.

A trained reward is an artifact ``reward/KEY`` (``aldsl.artifacts``): its weights plus
``meta.json`` with the family, the settings, the size of its training data and its held-out
metrics. KEY hashes the spec without its name, the training records and the identities of the
generator and the feature model, so an unchanged program finds its reward and reuses it, and a
change of data or settings trains a new one. Held-out metrics come from a fit on 80% of the train
queries scored on the other 20% (chosen by a hash of each query's id); the saved model is then
refit on all train queries with the same settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np

from aldsl.backends.base import Decoding
from aldsl.backends.registry import model_identity, resolve_model
from aldsl.compiler.specs import Answer, Evaluator, Finetune, Generator, ModelGenerator, Reward, unnamed
from aldsl.errors import UserError
from aldsl.evaluators import evaluate
from aldsl.ops.answers import extract
from aldsl.ops.sampling import sample
from aldsl.ops.select import select
from aldsl.store.hashing import content_hash
from aldsl.rewards.base import RewardItem, Scored
from aldsl.rewards.features import Features, feature_text
from aldsl.rewards.heads import Head, HeadConfig, train_pointwise

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

KIND = "reward"
VERSION = 2  # bump when fitting changes what a spec produces, so old artifacts are not reused
HOLDOUT = 0.2
PASS = 0.5  # a golden evaluator score at least this counts as correct
HIDDEN_UNITS = 64
EMBEDDED_DEFAULT = "smollm2-135m"
T = TypeVar("T")


def feature_generator(gen: Generator | None) -> ModelGenerator:
    """The generator whose hidden states are features: ``gen``, or the embedded model when ``gen``
    reads candidates from records (it has no weights)."""
    if isinstance(gen, ModelGenerator):
        return gen
    return ModelGenerator(EMBEDDED_DEFAULT, EMBEDDED_DEFAULT, Decoding())


def generator_identity(session: Session, gen: Generator | None, graph: ProgramGraph) -> str | None:
    """Content identity of a generator's weights (fine-tuned ones included), loading nothing."""
    if not isinstance(gen, ModelGenerator):
        return None
    spec = session.model_spec(gen, graph)
    return model_identity(resolve_model(spec.name), spec.checkpoint)


def sampler(spec: Reward) -> ModelGenerator:
    """The reward's generator, which it samples training candidates from (a model, not record fields)."""
    if not isinstance(spec.generator, ModelGenerator):
        raise UserError(f"reward {spec.name!r} ({spec.kind}) samples the generator's own candidates, but its "
                        "generator reads them from record fields; give it a model generator")
    return spec.generator


def training_records(spec: Reward | Finetune, session: Session, graph: ProgramGraph) -> list[dict[str, Any]]:
    """The records a reward or fine-tuning trains on: its split, cut to the first ``queries`` when set."""
    assert spec.data is not None
    records = session.split(graph, spec.data)
    limit = spec.get("queries") or 0
    return records[:limit] if limit > 0 else records


def head_config(spec: Reward) -> HeadConfig:
    return HeadConfig(epochs=spec["epochs"], lr=spec["lr"], hidden=HIDDEN_UNITS)


def holdout_ids(records: Sequence[dict[str, Any]], fraction: float = HOLDOUT) -> set[str]:
    """Ids of the held-out part of the train queries: the ``fraction`` with the smallest id hashes
    (at least one query, and never all of them when there are two or more)."""
    ids = sorted({str(r["id"]) for r in records}, key=lambda i: content_hash("holdout", i))
    n = min(max(1, round(fraction * len(ids))), len(ids) - 1) if len(ids) > 1 else 0
    return set(ids[:n])


def held_mask(owner_ids: Sequence[str], held: set[str]) -> np.ndarray:
    """Which rows belong to held-out queries."""
    return np.array([i in held for i in owner_ids], dtype=bool)


def probe_and_fit(x: np.ndarray, labels: Sequence[float], held: np.ndarray,
                  config: HeadConfig) -> tuple[np.ndarray, Head, list[float]]:
    """BCE: rewards of the held-out rows from a head fitted on the others, then the head fitted on all rows."""
    y = np.asarray(labels, dtype=np.float64)
    probe, _ = train_pointwise(x[~held], y[~held], config)
    head, losses = train_pointwise(x, y, config)
    return probe.predict(x[held]), head, losses


def ensure_artifact(spec: Reward, session: Session, records: Sequence[dict[str, Any]],
                    identities: Sequence[str | None], fit: Callable[[Path], dict[str, Any]],
                    load: Callable[[Path], T]) -> tuple[T, dict[str, Any]]:
    """Load the artifact of (spec, records, identities), or ``fit(folder)`` it (returns extra meta,
    with ``metrics``) and save it. ``load(folder)`` must raise on damaged files."""
    if not records:
        raise UserError(f"reward {spec.name!r}: its training split {spec.data} is empty; give it records to learn from")
    body = unnamed(spec.to_json())
    key = content_hash(VERSION, body, list(records), list(identities))

    def validate(folder: Path, meta: dict[str, Any]) -> None:
        if not isinstance(meta.get("metrics"), dict):
            raise ValueError("its meta.json has no metrics")
        load(folder)

    folder = session.artifacts.find(KIND, key, validate)
    if folder is None:
        meta: dict[str, Any] = {"family": spec.kind, "reward": spec.name, "version": VERSION,
                                "settings": body, "records": len(records),
                                "records_hash": content_hash(list(records)), "identities": list(identities)}
        with session.artifacts.create(KIND, key, meta) as tmp:
            meta.update(fit(tmp))
        folder = session.artifacts.path(KIND, key)
    return load(folder), session.artifacts.meta(folder)


def golden_scores(session: Session, evaluator: Evaluator | None, answer: Answer | None, texts: Sequence[str],
                  records: Sequence[dict[str, Any]], graph: ProgramGraph) -> list[float]:
    """The evaluator's score of each text (its answer extracted as the flow extracts it)."""
    if not texts:
        return []
    assert evaluator is not None and answer is not None
    answers = [extract(answer.kind, t, answer.arg) for t in texts]
    return [float(s) for s in evaluate(evaluator, answers, records, session, graph)]


def sample_graded(spec: Reward, session: Session, graph: ProgramGraph, records: Sequence[dict[str, Any]]
                  ) -> tuple[list[list[str]], list[dict[str, Any]], list[str], list[float]]:
    """``spec['samples']`` candidates per record from the reward's prompter and generator, graded by its
    evaluator: (candidates per record, the record of each candidate, candidates flat, golden scores)."""
    assert spec.prompter is not None
    per_record = sample(session, graph, spec.prompter, sampler(spec), records, spec["samples"], spec["temperature"])
    owners = [r for r, ts in zip(records, per_record) for _ in ts]
    texts = [t for ts in per_record for t in ts]
    return per_record, owners, texts, golden_scores(session, spec.evaluator, spec.answer, texts, owners, graph)


class HeadReward:
    """r(x, y) = head(features(feature_text(x, y))): a reward on a logit scale, scored in batches."""

    def __init__(self, name: str, features: Features, head: Head, metrics: dict[str, float]):
        self.name = name
        self.features = features
        self.head = head
        self.metrics = metrics

    def rewards(self, xs: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        return self.head.predict(self.features.embed([feature_text(x, c) for x, c in zip(xs, candidates)]))

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        return [Scored(float(r)) for r in self.rewards([i.x for i in items], [i.candidate for i in items])]


@dataclass
class Sampled:
    """L scored candidates of one query: their rewards, golden scores and extracted answers."""

    rewards: list[float]
    golden: list[float]
    answers: list[str]


def selection_metrics(queries: Sequence[Sampled]) -> dict[str, float]:
    """Golden accuracy of best-of-L by the reward vs the first sample, majority vote and pass@L."""
    if not queries:
        return {}
    rows = {"first": [], "majority": [], "best_of_L": [], "pass@L": []}
    for q in queries:
        rows["first"].append(q.golden[0])
        rows["majority"].append(q.golden[select("majority", q.answers, q.rewards)])
        rows["best_of_L"].append(q.golden[select("argmax", q.answers, q.rewards)])
        rows["pass@L"].append(max(q.golden))
    return {k: float(np.mean(v)) for k, v in rows.items()}


def by_query(owners: Sequence[dict[str, Any]], held: np.ndarray, r_held: np.ndarray, golden: Sequence[float],
             answers: Sequence[str]) -> list[Sampled]:
    """The held-out rows grouped into one :class:`Sampled` per query (rows in sample order)."""
    groups: dict[str, Sampled] = {}
    for r, i in zip(r_held, np.flatnonzero(held)):
        q = groups.setdefault(str(owners[i]["id"]), Sampled([], [], []))
        q.rewards.append(float(r))
        q.golden.append(golden[i])
        q.answers.append(answers[i])
    return list(groups.values())


def rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in metrics.items()}
