"""Binary reward model (Prompt-OIRL): P(the generator answers correctly | query, prompt).

Offline logs: every candidate template in ``among`` is run on the train queries with the
generator's decoding as declared (greedy by default), and each answer is labelled by the golden
evaluator. A classifier on [query features, one-hot template] (gradient-boosted trees by default,
or logistic regression) learns P(success). :meth:`BinaryReward.choose` picks, per query, the
template with the highest predicted success, with no extra LLM call. Held-out metrics: AUC, and
the accuracy of the per-query choice against the best single template (chosen on the fit part)
and the oracle choice.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from aldsl.compiler.specs import Reward, Template
from aldsl.errors import UserError
from aldsl.ops.sampling import sample
from aldsl.rewards.base import RewardItem, Scored
from aldsl.rewards.features import Features
from aldsl.rewards.heads import auc
from aldsl.rewards.trained import (PASS, ensure_artifact, feature_generator, generator_identity, golden_scores, holdout_ids,
                      rounded, sampler, training_records)

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

MODEL_FILE = "classifier.pkl"


class BinaryReward:
    """Chooses a prompt template per query by predicted success."""

    def __init__(self, name: str, among: Sequence[Template], features: Features, model: Any,
                 metrics: dict[str, float]):
        self.name = name
        self.among = list(among)
        self.features = features
        self.model = model
        self.metrics = metrics

    def success(self, xs: Sequence[str]) -> np.ndarray:
        """P(success) of every (query, template): shape (len(xs), len(among))."""
        if not xs:
            return np.zeros((0, len(self.among)))
        k = len(self.among)
        return _positive_probability(self.model, _design(self.features.embed(list(xs)), k)).reshape(len(xs), k)

    def choose(self, records: Sequence[dict[str, Any]]) -> list[int]:
        """Index into ``among`` of the template with the highest predicted success, per record."""
        return [int(i) for i in self.success([str(r["x"]) for r in records]).argmax(axis=1)]

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        raise UserError(f"reward {self.name!r} is a binary (Prompt-OIRL) model: it chooses a prompt per query and does "
                        f"not score candidates; use it as prompt(template = per_query({self.name})) or with "
                        "optimize ... = oirl(...)")


def build(spec: Reward, session: Session, graph: ProgramGraph) -> BinaryReward:
    records = training_records(spec, session, graph)
    if not spec.among:
        raise UserError(f"reward {spec.name!r}: among is empty; list the candidate templates")
    features = Features.of(spec["features"], session, feature_generator(spec.generator), graph)

    def fit(folder: Path) -> dict[str, Any]:
        labels = offline_logs(spec, session, graph, records)  # (queries, templates)
        q = features.embed([str(r["x"]) for r in records])
        x, y = _design(q, labels.shape[1]), labels.ravel().astype(int)
        held_ids = holdout_ids(records)
        held_q = np.array([str(r["id"]) in held_ids for r in records])
        held = np.repeat(held_q, labels.shape[1])
        probe = _classifier(spec["model"], y[~held])
        probe.fit(x[~held], y[~held])
        p_held = _positive_probability(probe, x[held]).reshape(-1, labels.shape[1])
        model = _classifier(spec["model"], y)
        model.fit(x, y)
        (folder / MODEL_FILE).write_bytes(pickle.dumps(model))
        best_single = int(labels[~held_q].mean(axis=0).argmax())
        held_labels = labels[held_q]
        metrics = {"auc": auc(p_held.ravel(), held_labels.ravel()),
                   "choice_accuracy": float(held_labels[np.arange(len(p_held)), p_held.argmax(axis=1)].mean()),
                   "best_single_accuracy": float(held_labels[:, best_single].mean()),
                   "oracle_accuracy": float(held_labels.max(axis=1).mean())}
        metrics.update({f"accuracy[{t.name}]": float(m) for t, m in zip(spec.among, labels.mean(axis=0))})
        return {"metrics": rounded(metrics), "queries": len(records), "best_single": spec.among[best_single].name}

    identities = [generator_identity(session, spec.generator, graph), features.identity]
    model, meta = ensure_artifact(spec, session, records, identities, fit, _load)
    return BinaryReward(spec.name, spec.among, features, model, meta["metrics"])


def offline_logs(spec: Reward, session: Session, graph: ProgramGraph,
                 records: Sequence[dict[str, Any]]) -> np.ndarray:
    """Success (golden score >= 0.5) of every template on every record, as declared decoding gives it."""
    assert spec.prompter is not None and spec.among
    columns = []
    for template in spec.among:
        prompter = replace(spec.prompter, template=template)
        answers = [ts[0] for ts in sample(session, graph, prompter, sampler(spec), records, 1)]
        scores = golden_scores(session, spec.evaluator, spec.answer, answers, records, graph)
        columns.append(np.asarray(scores) >= PASS)
    return np.stack(columns, axis=1).astype(np.float64)


def _design(q: np.ndarray, k: int) -> np.ndarray:
    """Rows [query features, one-hot template] for every (query, template), query-major."""
    return np.concatenate([np.repeat(q, k, axis=0), np.tile(np.eye(k, dtype=np.float32), (len(q), 1))], axis=1)


def _classifier(kind: str, y: np.ndarray) -> Any:
    from sklearn.dummy import DummyClassifier
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:  # every log succeeded or every one failed: nothing to separate
        return DummyClassifier(strategy="prior")
    if kind == "logistic":
        return LogisticRegression(max_iter=2000, C=0.1)
    return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                          l2_regularization=1.0, random_state=0)


def _positive_probability(model: Any, x: np.ndarray) -> np.ndarray:
    if len(x) == 0:
        return np.zeros(0)
    proba = model.predict_proba(x)
    classes = list(model.classes_)
    return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(x))


def _load(folder: Path) -> Any:
    model = pickle.loads((folder / MODEL_FILE).read_bytes())
    if not hasattr(model, "predict_proba"):
        raise ValueError(f"{MODEL_FILE} does not hold a classifier")
    return model
