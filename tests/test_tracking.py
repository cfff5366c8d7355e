"""--track mlflow: each trial of a real Optuna study, and the report, in a real local MLflow file store."""

from __future__ import annotations


import optuna
import pytest

mlflow = pytest.importorskip("mlflow")

from aldsl.cli import main  # noqa: E402
from aldsl.tracking import MLflowTracker  # noqa: E402


def _runs(uri: str, experiment: str):
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id])


def test_the_tracker_logs_every_finished_trial_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.set_user_attr("values", {"main.samples": 2, "g.temperature": x, "g.finetune": None})
        trial.set_user_attr("tokens_per_query", 10.0 + x)
        return x

    tracker = MLflowTracker("prog")  # the default store: ./mlruns
    assert tracker.uri == uri
    study.optimize(objective, n_trials=3, callbacks=[tracker])
    for trial in study.trials:  # a replay logs nothing twice
        tracker(study, trial)
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    parent = tracker.finish({"best.test.acc": 0.5}, {"main.samples": 2}, [report])
    client, runs = _runs(uri, "prog")
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(trials) == 3 and len(runs) == 4
    by_trial = {int(r.data.tags["trial"]): r for r in trials}
    assert by_trial[0].data.metrics["objective"] == study.trials[0].value
    assert by_trial[0].data.metrics["tokens_per_query"] == pytest.approx(10 + study.trials[0].value)
    assert by_trial[0].data.params["g.finetune"] == "none" and by_trial[0].data.params["main.samples"] == "2"
    top = client.get_run(parent)
    assert top.data.metrics["best.test.acc"] == 0.5
    assert [a.path for a in client.list_artifacts(parent)] == ["report.md"]


@pytest.mark.slow
def test_optimize_track_mlflow_logs_trials_and_report(tmp_path, tiny_model_dir, isolated_cache, monkeypatch):
    project = tmp_path / "proj"
    assert main(["init", str(project), "--model", str(tiny_model_dir)]) == 0
    monkeypatch.chdir(tmp_path)
    assert main(["optimize", str(project / "program.alp"), "--trials", "2", "--out", str(tmp_path / "build"),
                 "--quiet", "--track", "mlflow"]) == 0
    client, runs = _runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "starter")
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and len(runs) == 3
    names = {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    assert {"report.md", "report.json", "optimized.alp"} <= names
    assert any(k.endswith(".test.acc") for k in parent[0].data.metrics)
