"""``--report-to mlflow`` against a real MLflow tracking server started by the tests.

The server (``mlflow server``, SQLite backend, a local artifact folder, a free local port) runs for
this module. Tiny multimodal, docclass, detect and lora runs report to it; each run is read back
through ``MlflowClient``: params = the resolved config, metric history = results.csv, status, tags,
artifacts. An interrupted-then-resumed run is one MLflow run; a tracker failing mid-run is recorded
and never fails the training.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from guards import wait_until

from kitaeru.core.tracking import flatten_params

mlflow = pytest.importorskip("mlflow")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free local port, stopped (its whole process group) when the module ends."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    try:
        wait_until(lambda: _answers(url), "the MLflow server to answer /health", proc=proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def tracker(mlflow_server, monkeypatch):
    """The server as the standard environment names it, and a client to read runs back."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("KITAERU_NO_PROGRESS", "1")
    return MlflowClient(mlflow_server)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def mlflow_name(column: str) -> str:
    from kitaeru.core.tracking_backends import mlflow_metric_name

    return mlflow_metric_name(column)


def check_mlflow_run(client, run_dir: Path, *, status: str, recipe: str, weights: bool, experiment: str | None = None):
    """The run in MLflow is the run folder: params, per-epoch metrics, status, tags, artifacts."""
    result = json.loads((run_dir / "training_result.json").read_text())
    [link] = result["tracking"]
    assert link["backend"] == "mlflow" and link["error"] is None, link
    run_id = json.loads((run_dir / "tracking.json").read_text())["runs"]["mlflow"]
    assert link["run_id"] == run_id and link["url"].endswith(f"/runs/{run_id}")
    run = client.get_run(run_id)
    assert run.info.status == status
    if experiment:
        assert link["experiment"] == experiment == client.get_experiment(run.info.experiment_id).name
    # params: the resolved config, flattened (MLflow keeps 250 characters of a value)
    expected = {k: str(v)[:250] for k, v in flatten_params(yaml.safe_load((run_dir / "config.yaml").read_text())).items()}
    assert expected and {k: run.data.params.get(k) for k in expected} == expected
    # metrics: every numeric results.csv column, one point per epoch, at step = epoch
    rows = read_csv(run_dir / "results.csv")
    columns = [c for c in rows[0] if c != "epoch"]
    for column in columns:
        want = [(int(r["epoch"]), float(r[column])) for r in rows if r[column] not in ("", None)]
        got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, mlflow_name(column)))
        assert [s for s, _ in got] == [s for s, _ in want], column
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5, abs=1e-9), column
    tags = run.data.tags
    assert tags["recipe"] == recipe and tags["mode"] == "train" and tags["device"] == "cpu" and tags["tier"] == "cpu"
    assert tags["kitaeru_version"]
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "results.csv", "training_result.json", "results.png"} <= artifacts
    assert ("weights" in artifacts) == weights
    return run, result


def test_multimodal_reports_to_mlflow(tracker, cli, tmp_path):
    out = tmp_path / "mm"
    r = cli("multimodal", "train", "--use-sample-data", "--sample-scenes", "12", "--epochs", "2", "--batch-size", "4",
            "--output-dir", out, "--report-to", "tensorboard,mlflow", "--experiment", "mm-tracking", "--json")
    assert r.exit_code == 0, r.stderr
    printed = json.loads(r.stdout)  # MLflow's own "View run" lines stay off stdout
    assert printed["status"] == "completed" and printed["tracking"][0]["backend"] == "mlflow"
    run, _ = check_mlflow_run(tracker, out, status="FINISHED", recipe="multimodal", weights=True, experiment="mm-tracking")
    assert [int(r["epoch"]) for r in read_csv(out / "results.csv")] == [0, 1, 2]  # the untrained epoch 0 too
    assert run.data.params["tracking.report_to"] == "tensorboard,mlflow"
    weights = {Path(a.path).name for a in tracker.list_artifacts(run.info.run_id, "weights")}
    assert {"best.ckpt", "text_projector.pt", "image_projector.pt"} <= weights
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))  # tensorboard was asked for too


def _document_pool(root: Path) -> Path:
    from kitaeru.recipes.docclass.sample_documents import generate_documents

    generate_documents(root / "pool", 3, seed=11, kinds=["id_card", "passport", "form"])
    return root / "pool"


def test_docclass_reports_to_mlflow_without_weights(tracker, cli, tmp_path):
    r = cli("docclass", "train", "--cfg-name", "cpu_quickstart", "--data-dir", _document_pool(tmp_path),
            "--output-dir", tmp_path / "runs", "--workers", "0", "--epochs", "2", "data.train_samples_per_class=16",
            "--report-to", "mlflow", "--no-log-weights", "--json")
    assert r.exit_code == 0, r.stderr
    [run_dir] = (tmp_path / "runs").iterdir()
    check_mlflow_run(tracker, run_dir, status="FINISHED", recipe="docclass", weights=False, experiment="kitaeru-docclass")
    assert (run_dir / "weights" / "best.ckpt").is_file()  # kept locally, only not uploaded
    assert not (run_dir / "tensorboard").exists()  # --report-to mlflow alone: no TensorBoard events


def _detect_config(coco8: Path, out: Path, **extra):
    from kitaeru.core.config import load_config
    from kitaeru.recipes.detect.config import TrainConfig

    return load_config(TrainConfig, "detect", overrides={
        "data_dir": str(coco8), "output_dir": str(out), "epochs": 2, "image_size": 64, "batch_size": 4,
        "device": "cpu", "tracking.report_to": "mlflow", **extra})


@pytest.fixture
def coco8(shared_data, tmp_path):
    from detect_helpers import copy_coco8

    return copy_coco8(shared_data, tmp_path)


def test_detect_interrupted_then_resumed_is_one_mlflow_run(tracker, cli, coco8, tmp_path):
    from kitaeru.core.errors import RunInterrupted
    from kitaeru.recipes.detect.training import train_detector

    def stop_at_epoch_2(trainer):
        if trainer.epoch + 1 == 2:
            raise KeyboardInterrupt

    config = _detect_config(coco8, tmp_path / "det", **{"tracking.experiment": "det-resume"})
    with pytest.raises(RunInterrupted):
        train_detector(config, callbacks={"on_train_epoch_start": [stop_at_epoch_2]})
    [run_dir] = (tmp_path / "det").iterdir()
    first, _ = check_mlflow_run(tracker, run_dir, status="KILLED", recipe="detect", weights=True)
    assert [m.step for m in tracker.get_metric_history(first.info.run_id, "mAP50")] == [1]

    r = cli("detect", "train", "--resume", run_dir)  # --report-to comes back from the run's config
    assert r.exit_code == 0, r.stderr
    second, result = check_mlflow_run(tracker, run_dir, status="FINISHED", recipe="detect", weights=True)
    assert second.info.run_id == first.info.run_id and result["epochs_completed"] == 2
    experiment = tracker.get_experiment_by_name("det-resume")
    assert len(tracker.search_runs([experiment.experiment_id])) == 1
    assert [m.step for m in tracker.get_metric_history(second.info.run_id, "mAP50")] == [1, 2]


def test_tracker_failing_mid_run_is_recorded_not_fatal(tracker, coco8, tmp_path):
    from ultralytics.utils import SETTINGS

    from kitaeru.recipes.detect.training import train_detector

    out = tmp_path / "det-fail"

    def delete_the_tracker_run(trainer):
        if trainer.epoch == 1:  # the second epoch starts: the tracker run is gone from the server
            [run_dir] = out.iterdir()
            tracker.delete_run(json.loads((run_dir / "tracking.json").read_text())["runs"]["mlflow"])

    dict.__setitem__(SETTINGS, "mlflow", True)  # as a user's own Ultralytics settings could say
    try:
        run = train_detector(_detect_config(coco8, out), callbacks={"on_train_epoch_start": [delete_the_tracker_run]})
        assert SETTINGS["mlflow"] is False  # Ultralytics' own MLflow callback would report it a second time
    finally:
        dict.__setitem__(SETTINGS, "mlflow", False)
    result = json.loads((run.run_dir / "training_result.json").read_text())
    assert result["status"] == "completed" and result["epochs_completed"] == 2
    [link] = result["tracking"]
    assert link["backend"] == "mlflow" and link["run_id"] and "log metrics" in link["error"]
    assert [int(r["epoch"]) for r in read_csv(run.run_dir / "results.csv")] == [1, 2]  # local evidence complete
    assert (run.run_dir / "weights" / "best.pt").is_file()


def test_lora_reports_epochs_steps_and_the_adapter(tracker, cli, tiny_sd, prepared_floorplans, tmp_path):
    r = cli("lora", "train", "-d", prepared_floorplans, "--pretrained-model", tiny_sd, "-o", tmp_path, "--name", "trk",
            "--resolution", "32", "--batch-size", "2", "--epochs", "2", "--validation-every", "0", "--device", "cpu",
            "--seed", "3", "--report-to", "mlflow", "--json")
    assert r.exit_code == 0, r.stderr
    run_dir = tmp_path / "trk"
    run, result = check_mlflow_run(tracker, run_dir, status="FINISHED", recipe="lora", weights=True)
    steps = tracker.get_metric_history(run.info.run_id, "train/step_loss")
    assert sorted(m.step for m in steps) == list(range(1, result["steps"] + 1)) and result["steps"] == 6  # 6 images, batch 2
    final = Path(result["final_dir"]).name
    adapter = {Path(a.path).name for a in tracker.list_artifacts(run.info.run_id, f"weights/{final}")}
    assert "adapter_model.safetensors" in adapter
