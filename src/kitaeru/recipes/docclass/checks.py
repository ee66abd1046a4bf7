"""Cheap checks of each mode's config, run before torch, Lightning or onnxruntime are imported: a
wrong path or an impossible combination fails at once with one line naming the setting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.run import CONFIG_YAML, RESULT_JSON, refuse_used_run_dir, run_dir_under
from kitaeru.core.storage import IMAGE_EXTENSIONS, check_output_path, is_remote, list_files

if TYPE_CHECKING:  # pragma: no cover
    from .config import ClassifyConfig, EvaluateConfig, ExportConfig, RegisterConfig, TrainConfig


def _existing(path: str, what: str) -> None:
    if not is_remote(path) and not Path(path).exists():
        raise DataError(f"{path}: {what} not found")


def resume_folder(config: "TrainConfig") -> Path | None:
    """The run folder ``--resume`` means: ``latest`` (newest run under --output-dir) or a run folder
    (a checkpoint inside one is accepted too). None when not resuming."""
    if not config.resume:
        return None
    if config.resume == "latest":
        root = Path(config.train.output_dir)
        runs = [p for p in root.iterdir() if (p / CONFIG_YAML).is_file()] if root.is_dir() else []
        if not runs:
            raise ConfigError(f"--resume latest: no docclass run under {root} (give the run folder: --resume RUN)")

        def touched(run: Path) -> float:
            marker = run / RESULT_JSON
            return (marker if marker.exists() else run / CONFIG_YAML).stat().st_mtime

        return max(runs, key=touched)
    path = Path(config.resume)
    if path.is_file() and path.suffix == ".ckpt" and path.parent.name == "weights":
        path = path.parent.parent
    if not (path / CONFIG_YAML).is_file():
        raise ConfigError(f"--resume: {path} is not a docclass run folder (no {CONFIG_YAML})")
    return path


def check_train(config: "TrainConfig") -> None:
    if is_remote(config.train.output_dir):
        raise ConfigError(
            f"train.output_dir: '{config.train.output_dir}' is a URL; runs are written to a local folder "
            "(copy the run folder to the bucket afterwards)"
        )
    if config.resume and config.run_name:
        raise ConfigError("--run-name names a new run and --resume continues one: give one of them")
    resume_folder(config)
    from kitaeru.core.distributed import is_rank_zero, stdout_to_stderr_off_rank_zero

    stdout_to_stderr_off_rank_zero()
    root = Path(config.train.output_dir)
    if not config.resume:
        check_output_path(root, setting="--output-dir", kind="dir")
        run_dir_under(root, config.name, setting="name")
    if config.run_name and not config.resume and is_rank_zero():  # other ranks join rank 0's run
        refuse_used_run_dir(run_dir_under(root, config.run_name), exist_ok=config.exist_ok)
    if config.strategy == "fsdp" and _no_gpu(config.train.device):
        raise ConfigError(f"--strategy fsdp needs GPUs (--device {config.train.device} has none); use --strategy ddp")
    if config.data.data_dir:
        _existing(config.data.data_dir, "template pool")
        if not is_remote(config.data.data_dir) and not list_files(config.data.data_dir, IMAGE_EXTENSIONS):
            raise DataError(f"{config.data.data_dir}: no template images found "
                            f"(looked for {', '.join(IMAGE_EXTENSIONS)}, recursively)")


def _no_gpu(device: str) -> bool:
    """Whether ``device`` surely has no GPU, told without importing torch: cpu/mps, CUDA hidden, or a
    machine without any GPU device node (NVIDIA, ROCm, WSL). When in doubt: False (Lightning decides)."""
    import glob
    import os

    name = str(device or "auto").lower()
    if name in ("cpu", "mps"):
        return True
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    nodes = glob.glob("/dev/nvidia[0-9]*") + glob.glob("/proc/driver/nvidia/gpus/*")
    return not nodes and not any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))


def check_export(config: "ExportConfig") -> None:
    _existing(config.checkpoint, "checkpoint")
    check_output_path(config.out, setting="--out")
    for image in config.images:
        _existing(image, "image")


def check_evaluate(config: "EvaluateConfig") -> None:
    _existing(config.model, "model")
    _existing(config.templates, "template pool")


def check_register(config: "RegisterConfig") -> None:
    _existing(config.model, "model")
    check_output_path(config.out, setting="--out")
    _existing(config.templates, "template pool")


def check_classify(config: "ClassifyConfig") -> None:
    if not config.images:
        raise ConfigError("give at least one image or folder to classify: --image PATH (repeatable)")
    _existing(config.model, "model")
    _existing(config.bank, "bank")
