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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar, Union

import numpy as np

from aldsl.backends import ModelSpec, load_backend
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
from aldsl.rewards.backbone import DEFAULT_EPOCHS, DEFAULT_LR, LMReward, TuneConfig, ValueModel, fit_pairs, fit_points
from aldsl.rewards.features import Features, feature_text
from aldsl.rewards.heads import (Head, HeadConfig, load_head, pairwise_accuracy, save_head, train_pairwise,
                                train_pointwise)

if TYPE_CHECKING:
    from aldsl.compiler.graph import ProgramGraph
    from aldsl.runtime.session import Session

KIND = "reward"
VERSION = 3  # bump when fitting changes what a spec produces, so old artifacts are not reused
HOLDOUT = 0.2
PASS = 0.5  # a golden evaluator score at least this counts as correct
HIDDEN_UNITS = 64
HEAD_EPOCHS = 200  # full-batch epochs of a head (epochs = 0)
HEAD_LR = 1e-3
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
    return HeadConfig(epochs=spec["epochs"] or HEAD_EPOCHS, lr=spec["lr"] or HEAD_LR, hidden=HIDDEN_UNITS)


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


def step_prefixes(text: str) -> list[str]:
    """The text up to and including each non-empty line (the whole text if it has none)."""
    lines = text.split("\n")
    prefixes = ["\n".join(lines[:i + 1]) for i, line in enumerate(lines) if line.strip()]
    return prefixes or [text]


class HeadReward:
    """r(x, y) = head(features(feature_text(x, y))), on a logit scale, scored in batches; a process
    reward (``steps``) is the minimum of r over y's step prefixes."""

    def __init__(self, name: str, features: Features, head: Head, metrics: dict[str, float], steps: bool = False):
        self.name, self.features, self.head, self.metrics, self.steps = name, features, head, metrics, steps

    def rewards(self, xs: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        if self.steps:
            return np.array([s.min() for s in self.step_rewards(xs, candidates)], dtype=np.float64)
        return self.head.predict(self.features.embed([feature_text(x, c) for x, c in zip(xs, candidates)]))

    def step_rewards(self, xs: Sequence[str], candidates: Sequence[str]) -> list[np.ndarray]:
        """r of every step prefix of every candidate, batched."""
        prefixes = [step_prefixes(c) for c in candidates]
        flat = self.head.predict(self.features.embed([feature_text(x, p) for x, ps in zip(xs, prefixes) for p in ps]))
        out, start = [], 0
        for ps in prefixes:
            out.append(flat[start:start + len(ps)])
            start += len(ps)
        return out

    def score(self, items: Sequence[RewardItem]) -> list[Scored]:
        return [Scored(float(r)) for r in self.rewards([i.x for i in items], [i.candidate for i in items])]


Scorer = Union[HeadReward, LMReward]


class Learner:
    """How a trained family learns r from its labels: a head on frozen features (``tune = head``) or an
    LM backbone (:mod:`aldsl.rewards.backbone`). Both fit on the train queries outside the held-out
    part; a head is then refit on all of them, an LM is kept as fitted (too costly to train twice)."""

    def __init__(self, spec: Reward, session: Session, graph: ProgramGraph):
        self.spec, self.session = spec, session
        self.config = tune_config(spec)
        if self.config is None:
            self.features: Features | None = Features.of(spec["features"], session,
                                                         feature_generator(spec.generator), graph)
            self.identity = self.features.identity
        else:
            self.features = None
            self.identity = f"lm:{model_identity(resolve_model(_backbone(spec)))}"
        self.identities = [generator_identity(session, spec.generator, graph), self.identity]

    def points(self, folder: Path, texts: Sequence[tuple[str, str]], labels: Sequence[Sequence[float]],
               held: np.ndarray) -> tuple[list[np.ndarray], dict[str, Any]]:
        """BCE on labels in [0, 1]: one per text (r at its end), or one per step of the text (a process
        reward: r at the end of each step); returns r at the labelled places of the held texts."""
        if self.config is not None:
            _, r = fit_points(self.config, folder, texts, labels, held, value=self.spec["value"],
                              reporter=self.session.reporter, label=f"reward {self.spec.name}")
            return r, {}
        rows = [(i, feature_text(x, p)) for i, (x, c) in enumerate(texts)
                for p in _labelled_prefixes(c, len(labels[i]))]
        assert self.features is not None
        x = self.features.embed([t for _, t in rows])
        y = [v for ls in labels for v in ls]
        flat_held = np.array([held[i] for i, _ in rows], dtype=bool)
        r_held, head, losses = probe_and_fit(x, y, flat_held, head_config(self.spec))
        save_head(head, folder)
        out, start = [], 0
        for i in np.flatnonzero(held):
            out.append(r_held[start:start + len(labels[i])])
            start += len(labels[i])
        return out, {"final_loss": round(losses[-1], 5)}

    def pairs(self, folder: Path, texts: Sequence[tuple[str, str]], pairs: Sequence[tuple[int, int]],
              held: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """Bradley-Terry (Eq. 4) on (chosen, rejected) text indices; the held pairs' rewards."""
        margin, centering = self.spec["margin"], self.spec["centering"]
        if self.config is not None:
            _, a, b = fit_pairs(self.config, folder, texts, pairs, held, margin=margin, centering=centering,
                                reporter=self.session.reporter, label=f"reward {self.spec.name}")
            return a, b, {}
        assert self.features is not None
        x = self.features.embed([feature_text(*t) for t in texts])
        chosen, rejected = x[[a for a, _ in pairs]], x[[b for _, b in pairs]]
        config = head_config(self.spec)
        a_held = b_held = np.zeros(0)
        if held.any() and (~held).any():
            probe, _ = train_pairwise(chosen[~held], rejected[~held], config, margin, centering)
            a_held, b_held = probe.predict(chosen[held]), probe.predict(rejected[held])
        head, losses = train_pairwise(chosen, rejected, config, margin, centering)
        save_head(head, folder)
        train = {"train_pairwise_accuracy": pairwise_accuracy(head.predict(chosen), head.predict(rejected))}
        return a_held, b_held, {"final_loss": round(losses[-1], 5), "metrics": train}

    def describe(self, steps: bool) -> dict[str, Any]:
        """How the artifact's reward is computed (``meta.json``'s ``learner``; :class:`SavedReward` reads it)."""
        if self.config is not None:
            return {"tune": self.config.tune, "backbone": _backbone(self.spec), "steps": steps}
        return {"tune": "head", "features": self.spec["features"], "model": feature_generator(self.spec.generator).model,
                "steps": steps}

    def ensure(self, records: Sequence[dict[str, Any]], fit: Callable[[Path], dict[str, Any]],
               steps: bool = False) -> Scorer:
        """The fitted reward: loaded from its artifact, or ``fit(folder)`` and saved (see :func:`ensure_artifact`)."""
        about = self.describe(steps)

        def fit_and_describe(folder: Path) -> dict[str, Any]:
            return {**fit(folder), "learner": about}

        def load(folder: Path) -> Scorer:
            if self.config is not None:
                return LMReward(self.spec.name, ValueModel(folder), {}, steps)
            assert self.features is not None
            return HeadReward(self.spec.name, self.features, load_head(folder), {}, steps)

        model, meta = ensure_artifact(self.spec, self.session, records, self.identities, fit_and_describe, load)
        model.metrics = meta["metrics"]
        return model


def tune_config(spec: Reward) -> TuneConfig | None:
    """How an LM reward trains (None: a head on frozen features)."""
    tune = spec["tune"]
    if tune == "head":
        return None
    return TuneConfig(tune, str(resolve_model(_backbone(spec)).path), layers=spec["layers"],
                      epochs=spec["epochs"] or DEFAULT_EPOCHS, lr=spec["lr"] or DEFAULT_LR[tune], batch=spec["batch"],
                      generative=spec["verifier"] == "generative")


def _backbone(spec: Reward) -> str:
    """The model an LM reward starts from: the one named, else the generator's base weights."""
    return spec.get("backbone") or feature_generator(spec.generator).model


def _labelled_prefixes(candidate: str, steps: int) -> list[str]:
    """The texts a head scores for ``steps`` labels: the candidate, or its step prefixes (the first
    ``steps - 1`` and the whole)."""
    if steps == 1:
        return [candidate]
    prefixes = step_prefixes(candidate)
    return prefixes[: steps - 1] + prefixes[-1:]


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


class SavedReward:
    """A trained reward read from its artifact folder, outside any program: ``score(queries, candidates)``."""

    def __init__(self, folder: str | Path):
        folder = Path(folder).expanduser()
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise UserError(f"{folder}: not a trained reward (no meta.json); give the folder of a reward artifact, "
                            "e.g. ~/.cache/aldsl/artifacts/reward/KEY or OUT/<program>/artifacts/reward/KEY")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        about = meta.get("learner")
        if meta.get("kind") != KIND or not isinstance(about, dict):
            raise UserError(f"{folder}: not a reward artifact of this version of aldsl (retrain it with its program)")
        self.name, self.family, self.metrics = meta["reward"], meta["family"], meta["metrics"]
        if about["tune"] != "head":
            self.model: Scorer = LMReward(self.name, ValueModel(folder), self.metrics, about["steps"])
        else:
            backend = load_backend(ModelSpec(name=about["model"])) if about["features"] == "hidden" else None
            self.model = HeadReward(self.name, Features(about["features"], backend), load_head(folder), self.metrics,
                                    about["steps"])

    def score(self, queries: Sequence[str], candidates: Sequence[str]) -> list[float]:
        """r(x, y) of each (query, candidate) pair."""
        if len(queries) != len(candidates):
            raise UserError(f"score() got {len(queries)} queries but {len(candidates)} candidates")
        return [float(r) for r in self.model.rewards(list(queries), list(candidates))]
