"""Table 1, "LLMs for Bayesian optimization" (LLAMBO): the LLM proposes hyperparameters.

The task: tune an RBF ``SVC(C, gamma)`` on scikit-learn's bundled ``load_digits`` (pixels
scaled to [0, 1]). Over the wide log-scaled ranges of ``SPACE`` the landscape is mostly
plateaus at 0.10-0.16 (gamma too large, or C*gamma too small) with a diagonal ridge reaching
0.99 (about 7% of random configs score >= 0.985); one evaluation (5-fold CV) takes 0.1-0.7 s
on 2 cores. ``score`` reads a JSON object of
hyperparameters from the LLM's text and returns the cross-validated accuracy (the external
reward R); ``baseline`` runs Optuna with the same objective and budget for comparison.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

N_FOLDS = 5


@dataclass(frozen=True)
class Param:
    """One hyperparameter's range (inclusive), searched on a log scale when ``log``."""

    low: float
    high: float
    log: bool = True


SPACE: dict[str, Param] = {"C": Param(1e-3, 1e5), "gamma": Param(1e-6, 1e2)}


class ConfigError(ValueError):
    """The LLM's text does not hold a valid configuration; the message says what to fix."""


def space_text() -> str:
    """The search space as prompt text."""
    return ", ".join(f"{name} in [{p.low:g}, {p.high:g}]{' (log scale)' if p.log else ''}"
                     for name, p in SPACE.items())


def parse_config(text: str) -> dict[str, float]:
    """The first JSON (or Python dict) object in ``text`` naming the hyperparameters, validated."""
    objects = [obj for obj in map(_literal, re.findall(r"\{[^{}]*\}", text)) if obj is not None]
    if not objects:
        raise ConfigError("no JSON object found in the answer")
    names = {name.lower(): name for name in SPACE}
    chosen = next((o for o in objects if {str(k).lower() for k in o} >= set(names)), objects[0])
    unknown = sorted(str(k) for k in chosen if str(k).lower() not in names)
    if unknown:
        raise ConfigError(f"unknown hyperparameter(s) {', '.join(unknown)}")
    config = {names[str(k).lower()]: v for k, v in chosen.items()}
    missing = [name for name in SPACE if name not in config]
    if missing:
        raise ConfigError(f"missing hyperparameter(s) {', '.join(missing)}")
    return {name: _check_value(name, config[name]) for name in SPACE}


def _literal(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) and value else None


def _check_value(name: str, value: object) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)  # numbers, and numeric strings such as "1e-3"
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    param = SPACE[name]
    if not math.isfinite(number) or not param.low <= number <= param.high:
        raise ConfigError(f"{name}={value!r} is outside [{param.low:g}, {param.high:g}]")
    return number


@lru_cache(maxsize=1)
def _data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    features, labels = load_digits(return_X_y=True)
    return features / 16.0, labels


@lru_cache(maxsize=4096)
def _cv_accuracy(c: float, gamma: float, fold_seed: int) -> float:
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.svm import SVC

    features, labels = _data()
    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=fold_seed)
    return float(cross_val_score(SVC(C=c, gamma=gamma), features, labels, cv=folds).mean())


def objective(config: dict[str, float], fold_seed: int = 0) -> float:
    """Mean 5-fold CV accuracy of a valid config (deterministic folds; memoised per config)."""
    return _cv_accuracy(config["C"], config["gamma"], fold_seed)


def score(x: str, candidate: str, record: dict) -> dict:
    """External reward: CV accuracy of the config in the LLM's answer; 0 with advice if invalid."""
    try:
        config = parse_config(candidate)
    except ConfigError as exc:
        return {"score": 0.0,
                "feedback": f"Invalid proposal: {exc}. Answer with one JSON object such as "
                            f'{{"C": 1.0, "gamma": 0.01}} with {space_text()}.'}
    accuracy = objective(config, int(record.get("seed", 0)))
    return {"score": accuracy, "feedback": f"{json.dumps(config)} -> {N_FOLDS}-fold CV "
                                           f"accuracy {accuracy:.4f}"}


def format_history(history: list[tuple[dict, float]]) -> str:
    """Observed (config, accuracy) pairs as prompt lines, best last (as LLAMBO shows them)."""
    ranked = sorted(history, key=lambda pair: pair[1])
    return "\n".join(f"{json.dumps(config)} -> accuracy {value:.4f}" for config, value in ranked)


def baseline(sampler: str, n_evals: int, seed: int, fold_seed: int = 0) -> list[float]:
    """Optuna with the same objective and budget: the best-so-far accuracy after each trial."""
    import optuna

    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    if sampler not in samplers:
        raise ValueError(f"sampler must be one of {sorted(samplers)}, got {sampler!r}")
    if n_evals < 1:
        raise ValueError(f"n_evals must be >= 1, got {n_evals}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=samplers[sampler](seed=seed))

    def trial_objective(trial: optuna.Trial) -> float:
        config = {name: trial.suggest_float(name, p.low, p.high, log=p.log)
                  for name, p in SPACE.items()}
        return objective(config, fold_seed)

    study.optimize(trial_objective, n_trials=n_evals)
    return np.maximum.accumulate([t.value for t in study.trials]).tolist()
