"""Cheap checks of each mode's config, run before torch, Lightning or onnxruntime are imported: a
wrong path or an impossible combination fails at once with one line naming the setting. Training's
run folder and ``--resume`` are resolved here too (:func:`open_training_run`), by the shared
:func:`kitaeru.core.run_setup.open_run`, so a wrong resume fails before anything heavy loads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.storage import IMAGE_EXTENSIONS, check_output_path, is_remote, list_files

if TYPE_CHECKING:  # pragma: no cover
    from kitaeru.core.run_setup import OpenedRun

    from .config import ClassifyConfig, EvaluateConfig, ExportConfig, RegisterConfig, TrainConfig


def _existing(path: str, what: str) -> None:
    if not is_remote(path) and not Path(path).exists():
        raise DataError(f"{path}: {what} not found")


def open_training_run(config: "TrainConfig") -> "OpenedRun[TrainConfig]":
    """Where this training run goes and the config it runs with (cheap: nothing is written).

    A new run is ``<output-dir>/<name>`` numbered (name, name2, ...) or exactly ``--run-name``
    (refused when it holds a run, unless ``--exist-ok``); ``--resume latest|RUN`` takes the run's
    saved config.yaml with the settings given now on top, and is refused when that would change
    the network its checkpoints hold. A process that torchrun/SLURM/Lightning started beside rank 0
    joins rank 0's folder instead of choosing one.
    """
    from dataclasses import replace

    from kitaeru.core.run_setup import open_run, saved_config

    from .checkpoint import config_differences
    from .config import RUN_LAYOUT

    layout = replace(RUN_LAYOUT, default_name=config.name)
    root = Path(config.train.output_dir)
    opened = open_run(config, layout, root=root, name=config.run_name, resume=config.resume, exist_ok=config.exist_ok)
    if opened.resumed:
        changed = config_differences(saved_config(type(config)(), opened.run_dir, layout), opened.config)
        if changed:
            raise ConfigError(f"--resume {opened.run_dir}: its checkpoints are of another network "
                              f"({'; '.join(changed)}); start a new run for that")
    return opened


def check_train(config: "TrainConfig") -> None:
    if is_remote(config.train.output_dir):
        raise ConfigError(
            f"train.output_dir: '{config.train.output_dir}' is a URL; runs are written to a local folder "
            "(copy the run folder to the bucket afterwards)"
        )
    if config.resume and config.run_name:
        raise ConfigError("--run-name names a new run and --resume continues one: give one of them")
    from kitaeru.core.distributed import stdout_to_stderr_off_rank_zero

    stdout_to_stderr_off_rank_zero()
    if not config.resume:
        check_output_path(config.train.output_dir, setting="--output-dir", kind="dir")
    open_training_run(config)
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
    check_output_path(config.output, setting="--output")
    for image in config.images:
        _existing(image, "image")


def check_evaluate(config: "EvaluateConfig") -> None:
    _existing(config.model, "model")
    _existing(config.templates, "template pool")


def check_register(config: "RegisterConfig") -> None:
    _existing(config.model, "model")
    check_output_path(config.output, setting="--output")
    _existing(config.templates, "template pool")


def check_classify(config: "ClassifyConfig") -> None:
    if not config.images:
        raise ConfigError("give at least one image or folder to classify: --image PATH (repeatable)")
    _existing(config.model, "model")
    _existing(config.bank, "bank")
