"""Model checkpoints (Ultralytics ``.pt``) are data on every road: a pickle may *build* the allowed
model classes the way ``torch.save`` writes them, never *call* one (a constructor runs with the file's
arguments: ``AutoBackend("stage2.pt")`` loads a second file fully), never pass one to a function that
calls it (``_rebuild_from_type_v2``), and never use a class whose own ``__setstate__``/``__new__``
would run. Pass-through Ultralytics arguments that name checkpoints (``pretrained=``, a ``cfg=`` file)
go through the same check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detect_helpers import copy_coco8, fall_detection_weights

MODEL_CLASSES = ("ultralytics.nn.tasks.", "ultralytics.nn.modules.")


class _OpensMarker:
    """Unpickling this calls ``open(marker, "w")``: the stand-in for any code a pickle runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _Calls:
    """Pickles as ``func(*args)``: a REDUCE of whatever ``func`` names."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


class SetstateRunsCode(torch.nn.Module):
    """A module class whose own ``__setstate__`` runs when a pickle builds it."""

    def __setstate__(self, state):
        Path(state.pop("marker")).write_text("ran")
        super().__setstate__(state)


def _stage2(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker"
    stage2 = tmp_path / "stage2.pt"
    torch.save({"model": _OpensMarker(marker)}, stage2)
    return stage2, marker


def _save(path: Path, payload) -> Path:
    torch.save({"epoch": 1, "model": payload, "train_args": {"imgsz": 64}}, path)
    return path


def test_autobackend_is_not_a_model_class(tmp_path):
    from ultralytics.nn.autobackend import AutoBackend

    from kitaeru.core.errors import ConfigError
    from kitaeru.recipes.detect.model_source import check_weights, load_weights

    stage2, marker = _stage2(tmp_path)
    evil = _save(tmp_path / "evil.pt", _Calls(AutoBackend, str(stage2)))
    for load in (load_weights, check_weights):
        with pytest.raises(ConfigError, match="autobackend.*--trust-checkpoint"):
            load(evil)
    assert not marker.exists(), "the second file was unpickled"


def test_an_allowed_class_is_never_called(tmp_path):
    from ultralytics.nn.tasks import DetectionModel

    from kitaeru.core.checkpoints import load_model_checkpoint
    from kitaeru.core.errors import ConfigError

    arch = tmp_path / "arch.yaml"
    arch.write_text("nc: 1\nbackbone: []\nhead: []\n")
    direct = _save(tmp_path / "direct.pt", _Calls(DetectionModel, str(arch)))
    with pytest.raises(ConfigError, match="calls ultralytics.nn.tasks.DetectionModel.*--trust-checkpoint"):
        load_model_checkpoint(direct, allow_modules=MODEL_CLASSES)
    rebuild = _save(tmp_path / "rebuild.pt", _Calls(torch._tensor._rebuild_from_type_v2, DetectionModel,
                                                    torch.Tensor, (str(arch),), {}))
    with pytest.raises(ConfigError, match="passes ultralytics.nn.tasks.DetectionModel to a call"):
        load_model_checkpoint(rebuild, allow_modules=MODEL_CLASSES)
    # the same class kept as a plain value (an attribute that names a class) is fine
    plain = tmp_path / "plain.pt"
    torch.save({"model": torch.nn.Linear(2, 2), "kind": DetectionModel}, plain)
    assert load_model_checkpoint(plain, allow_modules=MODEL_CLASSES)["kind"] is DetectionModel


def test_a_class_whose_setstate_runs_code_is_refused(tmp_path):
    from kitaeru.core.checkpoints import load_model_checkpoint
    from kitaeru.core.errors import ConfigError

    marker = tmp_path / "marker"
    module = SetstateRunsCode()
    module.marker = str(marker)
    path = tmp_path / "setstate.pt"
    torch.save({"model": module}, path)
    with pytest.raises(ConfigError, match="SetstateRunsCode"):
        load_model_checkpoint(path, allow_modules=(__name__ + ".",))
    assert not marker.exists()


def test_real_checkpoints_still_load_as_data(tmp_path):
    from kitaeru.core.pickle_scan import checkpoint_pickle, find_class_calls
    from kitaeru.recipes.detect.model_source import load_weights

    best = fall_detection_weights()
    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(best)))
    assert any(n.startswith("ultralytics.nn.tasks.") for n in names)
    assert find_class_calls(checkpoint_pickle(best), names) == []
    assert type(load_weights(best)["model"]).__name__ == "DetectionModel"
    # a freshly built Ultralytics model saved the way Ultralytics saves it
    from ultralytics.nn.tasks import DetectionModel

    fresh = tmp_path / "fresh.pt"
    torch.save({"epoch": -1, "model": DetectionModel("yolov8n.yaml", nc=2, verbose=False)}, fresh)
    assert type(load_weights(fresh)["model"]).__name__ == "DetectionModel"


@pytest.fixture
def coco8(shared_data, tmp_path) -> Path:
    return copy_coco8(shared_data, tmp_path / "data")


def test_pass_through_arguments_naming_checkpoints_are_checked(coco8, tmp_path, cli):
    from ultralytics.nn.autobackend import AutoBackend

    stage2, marker = _stage2(tmp_path)
    evil = _save(tmp_path / "evil.pt", _Calls(AutoBackend, str(stage2)))
    cfg = tmp_path / "args.yaml"
    cfg.write_text(f"pretrained: {evil}\nepochs: 1\n")
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("epochs: !!python/object/apply:os.system ['true']\n")
    out = tmp_path / "out"
    base = ["detect", "train", "-d", coco8, "--model", "yolov8n.yaml", "-o", out, "--device", "cpu"]
    for extra, expected in ((f"pretrained={evil}", "--trust-checkpoint"), (f"pretrained={stage2}", "--trust-checkpoint"),
                            (f"cfg={cfg}", "--trust-checkpoint"), (f"cfg={tagged}", "not a plain YAML mapping"),
                            (f"pretrained={tmp_path / 'missing.pt'}", "weights file not found")):
        result = cli(*base, extra)
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (extra, result.stderr[-1500:])
        assert expected in lines[0], (extra, lines[0])
        assert not marker.exists(), f"{extra}: a checkpoint's code ran"
    assert not out.exists(), "a refused command created its output folder"
    predicted = cli("detect", "predict", "--model", fall_detection_weights(), "--source", coco8.parent / "images" / "val",
                    "-o", out, "--device", "cpu", f"cfg={cfg}")
    assert predicted.exit_code == 2 and "--trust-checkpoint" in predicted.stderr, predicted.stderr[-1500:]
    assert not marker.exists()


@pytest.mark.slow
def test_a_plain_cfg_file_is_read_once_and_recorded(coco8, tmp_path, cli):
    """A benign ``cfg=`` file trains, and its arguments are what the run's config.yaml records."""
    import yaml

    cfg = tmp_path / "args.yaml"
    cfg.write_text("lr0: 0.02\nwarmup_epochs: 0\n")
    out = tmp_path / "out"
    r = cli("detect", "train", "-d", coco8, "--model", "yolov8n.yaml", "-o", out, "--device", "cpu", "--epochs", "1",
            "--image-size", "64", "--batch-size", "4", "--workers", "0", f"cfg={cfg}", "--json")
    assert r.exit_code == 0, r.stderr[-2000:]
    saved = yaml.safe_load((out / "train" / "config.yaml").read_text())
    assert saved["ultralytics"]["lr0"] == 0.02 and saved["ultralytics"]["warmup_epochs"] == 0
    assert "cfg" not in saved["ultralytics"]
