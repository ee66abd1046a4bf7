"""detect, hardened: checkpoints are data (a .pt that runs code is refused by every command that
takes one), unreadable images are counted skips with a plain reason (a split of nothing but
unreadable images is an error before any run folder), outputs are checked before work, and
Ultralytics' own GPU strings (``--device 0,1`` / ``-1``) are validated in one line.

No training here: every refusal comes before Ultralytics trains (the resume of kitaeru's own
``last.pt`` is proved by the Ctrl-C test in test_detect_modes.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from detect_helpers import copy_coco8, fall_detection_weights
from PIL import Image


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("detect_hardening")


@pytest.fixture(scope="module")
def coco8(work, shared_data) -> Path:
    return copy_coco8(shared_data, work / "data")


@pytest.fixture
def evil(tmp_path) -> tuple[Path, Path]:
    """An Ultralytics-looking .pt whose pickle opens (creates) a marker file when loaded."""
    import torch

    marker = tmp_path / "marker"

    class Code:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"epoch": 1, "optimizer": {}, "model": Code(), "train_args": {"imgsz": 64}}, path)
    return path, marker


def _one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


# ---- checkpoints are data --------------------------------------------------------------------------


def test_a_checkpoint_that_runs_code_is_refused_everywhere(evil, coco8, tmp_path, cli):
    path, marker = evil
    run = tmp_path / "runs" / "train"  # an interrupted run whose last.pt was swapped for the evil file
    (run / "weights").mkdir(parents=True)
    shutil.copyfile(path, run / "weights" / "last.pt")
    (run / "training_result.json").write_text(json.dumps({"status": "interrupted"}))
    out = tmp_path / "out"
    commands = [
        ["detect", "train", "-d", coco8, "--model", path, "-o", out, "--device", "cpu"],
        ["detect", "train", "--resume", run, "--device", "cpu"],
        ["detect", "train", "-d", coco8, "--model", path, "--validate-only", "-o", out, "--device", "cpu"],
        ["detect", "val", "-d", coco8, "--model", path, "-o", out, "--device", "cpu"],
        ["detect", "predict", "--model", path, "--source", coco8.parent / "images" / "val", "-o", out, "--device", "cpu"],
        ["detect", "predict", "--model", path, "--source", coco8.parent / "images" / "val", "-o", out, "--image-size", "64"],
        ["detect", "export", "--model", path, "--output", out / "evil.onnx"],
    ]
    for args in commands:
        line = _one_line_error(cli(*args))
        assert "--trust-checkpoint" in line and ("evil.pt" in line or "last.pt" in line), (args, line)
        assert not marker.exists(), f"{args}: the checkpoint's code ran"
    assert not out.exists(), "a refused command created its output folder"


def test_kitaerus_and_the_shipped_checkpoints_load_as_data():
    from kitaeru.recipes.detect.model_source import ALLOW_NAMES, load_weights, trained_image_size

    ckpt = load_weights(fall_detection_weights())
    assert ckpt["model"] is not None or ckpt["ema"] is not None
    assert trained_image_size(fall_detection_weights()) is not None
    assert ALLOW_NAMES == ("ultralytics.utils.IterableSimpleNamespace",)  # exactly, by name


def test_trust_checkpoint_is_a_flag_of_every_mode(cli):
    for mode in ("train", "val", "predict", "export"):
        r = cli("detect", mode, "--help")
        assert r.exit_code == 0 and "--trust-checkpoint" in r.stdout, mode


# ---- images --------------------------------------------------------------------------------------------


def test_every_validation_image_unreadable_is_an_error_before_any_run_folder(shared_data, tmp_path, cli):
    data = copy_coco8(shared_data, tmp_path)
    for image in (data.parent / "images" / "val").iterdir():
        image.write_bytes(b"\x00 not an image at all")
    out = tmp_path / "runs"
    line = _one_line_error(cli("detect", "train", "-d", data, "-o", out, "--model", "yolov8n.yaml", "--epochs", "1",
                               "--image-size", "64", "--device", "cpu", "--no-tensorboard"))
    assert "every validation image is unreadable (4 skipped, e.g. " in line, line
    assert "not an image (cannot identify the file format)" in line and "pi_heif" not in line
    assert not out.exists() or not any(out.iterdir()), "a run folder was left for a run that never started"


def test_unreadable_image_reasons_are_plain_even_after_ultralytics_patched_pil(tmp_path):
    import ultralytics  # noqa: F401 - replaces PIL.Image.open process-wide

    from kitaeru.recipes.detect.data import NOT_AN_IMAGE, image_problem
    from kitaeru.recipes.detect.evidence import _short

    garbage = tmp_path / "corrupt.jpg"
    garbage.write_bytes(b"\xff\xd8 this is not a jpeg")
    assert image_problem(garbage) == NOT_AN_IMAGE
    thin = tmp_path / "thin.png"
    Image.new("RGB", (5000, 1)).save(thin)
    assert "side under" in image_problem(thin)
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 48)).save(good)
    assert image_problem(good) is None
    message = f"{garbage}: ignoring corrupt image/label: No module named 'pi_heif'"
    assert _short(message, str(garbage)) == NOT_AN_IMAGE


def test_an_unreadable_training_image_is_a_counted_skip_not_a_bad_label(shared_data, tmp_path):
    from kitaeru.recipes.detect.data import check_labels, load_data_yaml

    data = copy_coco8(shared_data, tmp_path)
    (data.parent / "images" / "train" / "broken.jpg").write_bytes(b"junk")
    (data.parent / "labels" / "train" / "broken.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    dataset = load_data_yaml(data)
    summary = check_labels(dataset)["train"]
    assert (summary.images, summary.usable, len(summary.problems), len(summary.unreadable)) == (5, 4, 0, 1)
    assert summary.as_dict()["unreadable_images"] == 1
    skip = dataset.problems[0].as_skip()
    assert skip["path"].endswith("broken.jpg") and skip["reason"] == "not an image (cannot identify the file format)"


# ---- outputs and devices -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,args", [
    ("train", ["-d", "{data}", "-o", "{t}/afile/runs"]),
    ("val", ["-d", "{data}", "-o", "{t}/afile/runs"]),
    ("predict", ["--model", "{weights}", "--source", "{t}", "-o", "{t}/afile/runs"]),
    ("export", ["--model", "{weights}", "--output", "{t}/afile/m.onnx"]),
])
def test_an_output_under_a_file_is_refused_before_work(mode, args, coco8, tmp_path, cli):
    (tmp_path / "afile").write_text("x")
    values = {"t": tmp_path, "data": coco8, "weights": fall_detection_weights()}
    line = _one_line_error(cli("detect", mode, *[a.format(**values) for a in args]))
    assert "is a file" in line and str(tmp_path / "afile") in line


@pytest.mark.parametrize("device", ["0,1", "-1", "0"])
def test_gpu_lists_without_a_gpu_are_one_line_errors(device, coco8, tmp_path, cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = _one_line_error(cli("detect", "train", "-d", coco8, "-o", tmp_path / "runs", "--device", device))
    assert f"--device {device}" in line and "no CUDA GPU" in line
    assert not (tmp_path / "runs").exists()


def test_device_strings_are_checked_and_passed_to_ultralytics_as_written():
    from kitaeru.core.errors import ConfigError
    from kitaeru.recipes.detect.config import check_device, is_gpu_list
    from kitaeru.recipes.detect.evaluation import ultralytics_device_arg

    for good in ("auto", "cpu", "mps", "cuda", "cuda:1", "0", "0,1", "-1", "-1,-1", "0,1,2,3"):
        check_device(good)
    for bad in ("gpu", "0,,1", "cuda:x", "1-2", ""):
        with pytest.raises(ConfigError, match="--device"):
            check_device(bad)
    assert is_gpu_list("0,1") and not is_gpu_list("cuda:0")
    assert ultralytics_device_arg("0,1", "cuda:0") == "0,1"  # Ultralytics' own DDP
    assert ultralytics_device_arg("0,1", "cuda:0", several=False) == "0"
    assert ultralytics_device_arg("-1", "cuda") == "-1"
    assert ultralytics_device_arg("auto", "cuda:1") == "1" and ultralytics_device_arg("cpu", "cpu") == "cpu"


def test_a_folder_holding_data_yaml_is_accepted_as_data_dir(coco8):
    """A SageMaker channel (SM_CHANNEL_TRAINING) is the dataset's folder, not its YAML."""
    from kitaeru.recipes.detect.config import TrainConfig
    from kitaeru.recipes.detect.training import check_train

    check_train(TrainConfig(data_dir=str(coco8.parent)))


# ---- SageMaker --------------------------------------------------------------------------------------------


def test_sagemaker_gpus_become_ultralytics_ddp_devices(monkeypatch):
    from kitaeru.recipes.detect.training import sagemaker_device

    monkeypatch.delenv("SM_MODEL_DIR", raising=False)
    monkeypatch.delenv("SM_TRAINING_ENV", raising=False)
    assert sagemaker_device("auto") == "auto"
    monkeypatch.setenv("SM_MODEL_DIR", "/opt/ml/model")
    monkeypatch.setenv("SM_NUM_GPUS", "4")
    assert sagemaker_device("auto") == "0,1,2,3" and sagemaker_device("cpu") == "cpu"
    monkeypatch.setenv("SM_NUM_GPUS", "1")
    assert sagemaker_device("auto") == "auto"


@pytest.mark.slow
def test_sagemaker_entry_trains_into_the_model_dir(shared_data, tmp_path, monkeypatch, capsys):
    """The estimator's entry point with the SageMaker environment simulated: channel = the dataset's folder."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sagemaker_entry", Path(__file__).resolve().parents[1] / "examples" / "sagemaker_entry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    channel = copy_coco8(shared_data, tmp_path / "input" / "data").parent
    model = tmp_path / "model"
    model.mkdir()
    for key, value in {"SM_CHANNEL_TRAINING": channel, "SM_MODEL_DIR": model, "SM_NUM_GPUS": "0",
                       "SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"}.items():
        monkeypatch.setenv(key, str(value))
    code = module.main(["--recipe", "detect", "--model", "yolov8n.yaml", "--epochs", "1", "--image_size", "64",
                        "--batch_size", "4", "--tensorboard", "False", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err[-2000:]
    result = json.loads((model / "train" / "training_result.json").read_text())
    assert result["status"] == "completed" and result["epochs_completed"] == 1
    assert (model / "train" / "weights" / "best.pt").is_file()


def test_ultralytics_device_numbers_as_key_values(cli):
    for value, expected in (("device=0", "0"), ("device=-1", "-1"), ("device=0,1", "0,1")):
        r = cli("detect", "train", "-d", "d.yaml", value, "--print-config")
        assert r.exit_code == 0, r.stderr
        assert yaml.safe_load(r.stdout)["device"] == expected
