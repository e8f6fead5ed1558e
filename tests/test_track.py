"""Training curves in the tracker: every run of the epoch loop is an MLflow run (settings, each epoch's record,
final metrics) in a local store file or on a server; off unless asked."""

from __future__ import annotations

import pytest

from tests.conftest import TINY, assert_one_line_error


def runs_of(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment}"
    return c, c.search_runs([exp.experiment_id])


def test_a_fine_tuning_logs_its_curves_settings_and_final_metrics(cli, tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("EDGEFT_TRACK", "")  # recorded, so what --track sets is undone after the test
    store = tmp_path / "mlflow.db"
    r = cli("--track", store, "finetune", "--data", tiny_data, "--out", tmp_path / "ft", "--model", TINY["model"],
            "--weights", "none", "--mode", "full", "--epochs", "3", "--image-size", "32", "--resize", "stretch",
            "--batch-size", "8", "--threads", "2")
    assert r.exit_code == 0, r.output
    client, runs = runs_of(f"sqlite:///{store}", "edgeft")
    assert [x.info.run_name for x in runs] == ["ft"] and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.data.params["epochs"] == "3" and run.data.params["mode"] == "full"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert steps == [1, 2, 3]
    assert len(client.get_metric_history(run.info.run_id, "lr")) == 3
    assert any(k.startswith("final.") for k in run.data.metrics)
    import json

    history = json.loads((tmp_path / "ft" / "meta.json").read_text())["extra"]["history"]
    logged = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "train_loss"), key=lambda m: m.step)]
    assert logged == pytest.approx([h["train_loss"] for h in history])  # the tracker and meta.json agree


def test_an_anomaly_fit_logs_its_settings_and_numbers(cli, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from tests.test_anomaly import TINY_ANOMALY, write_anomaly_folder

    monkeypatch.setenv("EDGEFT_TRACK", "")  # recorded, so what --track sets is undone after the test
    data = write_anomaly_folder(tmp_path / "parts")
    store = tmp_path / "mlflow.db"
    r = cli("--track", store, "anomaly", "--data", data, "--good", "good", "--out", tmp_path / "fit", *TINY_ANOMALY)
    assert r.exit_code == 0, r.output
    _, runs = runs_of(f"sqlite:///{store}", "edgeft")
    assert [x.info.run_name for x in runs] == ["fit"] and runs[0].data.params["method"] == "padim"
    assert "final.val.auroc" in runs[0].data.metrics


def test_tracking_is_off_unless_asked_and_a_bad_store_is_one_line(cli, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFT_TRACK", "")  # recorded, so what --track sets is undone after the test
    args = ["finetune", "--data", tiny_data, "--model", TINY["model"], "--weights", "none", "--mode", "full",
            "--epochs", "1", "--image-size", "32", "--resize", "stretch", "--batch-size", "8", "--threads", "2"]
    assert cli(*args, "--out", tmp_path / "a").exit_code == 0
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "mlruns").exists()
    (tmp_path / "dir.db").mkdir()
    assert_one_line_error(cli("--track", tmp_path / "dir.db", *args, "--out", tmp_path / "b"), "is a folder")
    assert not (tmp_path / "b").exists()
