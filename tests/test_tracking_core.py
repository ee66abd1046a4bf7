"""``--report-to``: the shared settings, the result contract, and a tracker that cannot be reached.

Trainings that report to a real MLflow server are in test_tracking_mlflow; W&B offline in test_tracking_wandb.
"""

from __future__ import annotations

import json
import socket

import pytest

from kitaeru.core.tracking import TrackingSettings, flatten_params, tracking_links

TRAIN_SCHEMAS = [
    ("kitaeru.recipes.multimodal.config", "TrainConfig"),
    ("kitaeru.recipes.docclass.config", "TrainConfig"),
    ("kitaeru.recipes.detect.config", "TrainConfig"),
    ("kitaeru.recipes.lora.config", "TrainConfig"),
]


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_report_to_takes_one_or_several_known_trackers():
    assert TrackingSettings().report_to == "tensorboard" and TrackingSettings().tensorboard
    both = TrackingSettings(report_to=" TensorBoard, mlflow,mlflow ")
    assert both.report_to == "tensorboard,mlflow" and both.trackers == ["mlflow"] and both.tensorboard
    assert TrackingSettings(report_to="none").backends == [] and not TrackingSettings(report_to="none").tensorboard
    assert TrackingSettings(report_to="csv,wandb").trackers == ["csv", "wandb"]
    for bad in ("comet", "", "none,mlflow"):
        with pytest.raises(ValueError):
            TrackingSettings(report_to=bad)


@pytest.mark.parametrize("module,name", TRAIN_SCHEMAS)
def test_every_training_mode_declares_the_same_tracking_flags(module, name):
    import importlib

    from kitaeru.core.config import cli_meta, field_paths, resolve_key

    schema = getattr(importlib.import_module(module), name)
    assert schema.model_fields["tracking"].annotation is TrackingSettings  # declared once, in core
    paths = field_paths(schema)
    for key in ("report_to", "experiment", "report_to_optional", "log_weights"):
        assert resolve_key(schema, key) == f"tracking.{key}"
        assert cli_meta(paths[f"tracking.{key}"])["promote"]  # a flag of its own: --report-to ...


@pytest.mark.parametrize("job", ["multimodal", "docclass", "detect", "lora"])
def test_generated_help_shows_report_to(cli, job):
    r = cli(job, "train", "--help")
    assert r.exit_code == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "--report-to" in text and "--experiment" in text and "--report-to-optional" in text and "--no-log-weights" in text


def test_unknown_tracker_is_one_line_error(cli, tmp_path):
    r = cli("multimodal", "train", "--use-sample-data", "--report-to", "tensorboard,comet", "-o", str(tmp_path / "mm"))
    assert r.exit_code == 2
    assert "report_to" in r.stderr and "comet" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "mm").exists()


def test_unreachable_mlflow_stops_the_run_before_any_model_loads(cli, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "mm"
    r = cli("multimodal", "train", "--use-sample-data", "--sample-scenes", "8", "--epochs", "1",
            "--report-to", "mlflow", "-o", str(out))
    assert r.exit_code == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if "mlflow" in line]
    assert len(lines) == 1 and "cannot use the tracking server" in lines[0] and uri in lines[0]
    assert "Traceback" not in r.stderr
    # nothing was generated, encoded or trained: no sample scenes, no feature cache, no evidence
    assert not (out / "sample_data").exists() and not (out / "cache").exists()
    assert not (out / "results.csv").exists() and not (out / "training_result.json").exists()


def test_tracking_links_reads_the_result_contract():
    assert tracking_links(None) == [] and tracking_links({}) == [] and tracking_links({"tracking": "x"}) == []
    result = {"tracking": [
        {"backend": "mlflow", "run_id": "abc", "url": "http://h/#/experiments/1/runs/abc", "experiment": "e", "error": None},
        {"backend": "wandb", "run_id": "w1", "experiment": "p", "error": "log metrics: CommError: down"},
        {"run_id": "no backend"}, "junk",
    ]}
    links = tracking_links(result)
    assert [link["backend"] for link in links] == ["mlflow", "wandb"]
    assert links[1] == {"backend": "wandb", "run_id": "w1", "url": None, "experiment": "p",
                        "error": "log metrics: CommError: down"}


def test_params_are_the_flattened_config():
    params = flatten_params({"name": "x", "train": {"lr0": 0.01, "aug": {"flip": True}}, "topics": ["/a"], "empty": {}})
    assert params == {"name": "x", "train.lr0": 0.01, "train.aug.flip": True, "topics": json.dumps(["/a"]),
                      "empty": "{}"}


def test_csv_reporting_follows_the_run_folder_and_survives_resume(tmp_path):
    """``--report-to csv``: Lightning's CSVLogger gets every results.csv row and per-step number; a
    resumed run keeps the rows it had (Lightning would otherwise clear the file)."""
    import csv as csvlib

    import pytest as _pytest

    from kitaeru.core.errors import RunInterrupted
    from kitaeru.core.run import RunFolder
    from kitaeru.core.tracking import attach_reporter

    settings = TrackingSettings(report_to="csv")
    config = TrackingSettings(report_to="csv", experiment="x")  # any pydantic config: its dump becomes params
    run = RunFolder(tmp_path / "run", tensorboard=False)
    assert attach_reporter(run, settings, config, recipe="demo") is not None
    with _pytest.raises(RunInterrupted):
        with run.lifecycle(resume_command="kitaeru demo train --resume run", recipe="demo"):
            run.log_epoch({"epoch": 1, "loss": 0.5})
            run.log_scalars({"train/step_loss": 0.7}, step=3)
            raise KeyboardInterrupt
    assert json.loads((tmp_path / "run" / "training_result.json").read_text())["tracking"] == []  # csv is no tracker run

    again = RunFolder(tmp_path / "run", tensorboard=False)
    attach_reporter(again, TrackingSettings(), config, recipe="demo", resume=True)  # report_to comes from tracking.json
    with again.lifecycle(resume_command="kitaeru demo train --resume run", recipe="demo"):
        again.log_epoch({"epoch": 2, "loss": 0.25})
    with open(tmp_path / "run" / "csv_logs" / "metrics.csv", newline="") as fh:
        rows = [{k: v for k, v in r.items() if v != ""} for r in csvlib.DictReader(fh)]
    assert rows == [{"loss": "0.5", "step": "1"}, {"train/step_loss": "0.7", "step": "3"}, {"loss": "0.25", "step": "2"}]
    hparams = (tmp_path / "run" / "csv_logs" / "hparams.yaml").read_text()
    assert "recipe: demo" in hparams and "experiment: x" in hparams


@pytest.mark.slow
def test_report_to_optional_warns_and_trains_without_the_tracker(cli, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from kitaeru.recipes.docclass.sample_documents import generate_documents

    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("KITAERU_NO_PROGRESS", "1")
    generate_documents(tmp_path / "pool", 3, seed=11, kinds=["id_card", "passport", "form"])
    r = cli("docclass", "train", "--cfg-name", "cpu_quickstart", "--data-dir", tmp_path / "pool",
            "--output-dir", tmp_path / "runs", "--workers", "0", "--epochs", "1", "data.train_samples_per_class=16",
            "--report-to", "csv,mlflow", "--report-to-optional", "--json")
    assert r.exit_code == 0, r.stderr
    assert "--report-to-optional: the run goes on without it" in r.stderr and uri in r.stderr
    result = json.loads(r.stdout)
    assert result["status"] == "completed"
    [link] = result["tracking"]
    assert link["backend"] == "mlflow" and link["run_id"] is None and "cannot use the tracking server" in link["error"]
    [run_dir] = (tmp_path / "runs").iterdir()
    assert (run_dir / "csv_logs" / "metrics.csv").is_file()  # the other tracker still reported


def test_check_trackers_refuses_before_a_run_folder_exists(tmp_path, monkeypatch):
    """The early check a recipe calls before loading its model (lora): one ConfigError line per tracker."""
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    from kitaeru.core.errors import ConfigError
    from kitaeru.core.tracking import check_trackers

    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(ConfigError, match=f"cannot use the tracking server {uri} \\(connection refused\\)"):
        check_trackers(TrackingSettings(report_to="mlflow"))
    check_trackers(TrackingSettings(report_to="mlflow", report_to_optional=True))  # a warning later, not an error
    check_trackers(TrackingSettings(report_to="tensorboard,csv"))  # nothing to reach

    # online W&B without an API key: refused instead of a login prompt
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(ConfigError, match="no W&B API key"):
        check_trackers(TrackingSettings(report_to="wandb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_trackers(TrackingSettings(report_to="wandb"))

    # a resumed run is checked against where it reported before (its tracking.json)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tracking.json").write_text(json.dumps({"settings": {"report_to": "mlflow"}, "runs": {}}))
    with pytest.raises(ConfigError, match="cannot use the tracking server"):
        check_trackers(TrackingSettings(), resume_dir=tmp_path / "run")
    check_trackers(TrackingSettings(report_to="none"), resume_dir=tmp_path / "run")  # --report-to given now wins
