"""Experiment tracking: an Optuna callback that logs each finished trial to MLflow, and the final report.

``MLflowTracker`` is an ordinary Optuna callback (``study.optimize(..., callbacks=[tracker])``); ``aldsl
optimize --track mlflow`` replays the study's finished trials through it once the search is done, then
logs the report as the parent run's artifacts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import optuna

from aldsl.errors import require_extra


class MLflowTracker:
    """Logs trials as nested runs of one parent run (params: the trial's values; metrics: its objective
    score, tokens per query and seconds) to ``uri``; by default a local store in ./mlruns: the runs in
    ``mlruns/mlflow.db`` (SQLite: MLflow 3 refuses new file stores) and the files in ``mlruns/artifacts``."""

    def __init__(self, experiment: str, uri: str | None = None, run_name: str | None = None):
        self.mlflow = require_extra("mlflow", "track", "--track mlflow")
        artifacts = None
        if uri is None:
            root = Path("mlruns").resolve()
            root.mkdir(parents=True, exist_ok=True)
            uri, artifacts = f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()
        self.uri = uri
        self.mlflow.set_tracking_uri(uri)
        if self.mlflow.get_experiment_by_name(experiment) is None:
            self.mlflow.create_experiment(experiment, artifact_location=artifacts)
        self.mlflow.set_experiment(experiment)
        self.parent = self.mlflow.start_run(run_name=run_name or experiment)
        self.logged: set[int] = set()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.number in self.logged or not trial.state.is_finished():
            return
        self.logged.add(trial.number)
        metrics = {"tokens_per_query": trial.user_attrs.get("tokens_per_query"),
                   "seconds": trial.user_attrs.get("seconds")}
        if trial.values:
            metrics.update({f"objective_{i}" if i else "objective": v for i, v in enumerate(trial.values)})
        with self.mlflow.start_run(run_name=f"trial {trial.number}", nested=True):
            self.mlflow.log_params({k: _param(v) for k, v in trial.user_attrs.get("values", trial.params).items()})
            self.mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
            self.mlflow.set_tags({"state": trial.state.name, "trial": str(trial.number)})

    def finish(self, metrics: dict[str, float], params: dict[str, Any], files: Iterable[Path]) -> str:
        """Log the final figures and files (report.md, report.json, optimized.alp, plots) on the parent run."""
        self.mlflow.log_params({k: _param(v) for k, v in params.items()})
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for f in files:
            if f.is_file():
                self.mlflow.log_artifact(str(f))
        run_id = self.parent.info.run_id
        self.mlflow.end_run()
        return run_id


def _param(value: Any) -> str:
    return "none" if value is None else str(value)
