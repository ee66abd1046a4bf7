"""``kitaeru detect train ...``: YOLOv8 fine-tuning on Ultralytics (seed 002).

Only the config schema is imported here; Ultralytics and torch load when the command runs.
Anything after the options of the form ``key=value`` is handed to Ultralytics as a training
argument (``lr0=0.01 cos_lr=true``); values are read as YAML scalars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from kitaeru.cli._common import DEVICE_HELP, CfgNameOption, ConfigFileOption, build_config
from kitaeru.core.config import field_help
from kitaeru.recipes.detect.config import RECIPE, DetectConfig

app = typer.Typer(help="YOLOv8 fine-tuning on Ultralytics with GPU-tier plans, OOM recovery, TensorBoard, LLRD, copy-paste synthesis, ONNX export.", no_args_is_help=True)

H = DetectConfig


@app.callback()
def detect() -> None:
    """YOLOv8 fine-tuning (seed 002): ``kitaeru detect train --dataset data.yaml``."""


def parse_passthrough(args: list[str]) -> dict[str, Any]:
    """``["lr0=0.01", "cos_lr=true"]`` → ``{"lr0": 0.01, "cos_lr": True}``; anything else is an error."""
    import yaml

    from kitaeru.core.errors import ConfigError

    out: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key or key.startswith("-"):
            raise ConfigError(f"unexpected argument '{arg}' (Ultralytics settings are given as key=value, e.g. lr0=0.01)")
        try:
            out[key] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            out[key] = value
    return out


@app.command("train", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help=field_help(H, "dataset")),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=field_help(H, "model")),
    output: Optional[str] = typer.Option(None, "--output", "-o", help=field_help(H, "output")),
    fast: bool = typer.Option(False, "--fast", help="Fast settings (small model, few epochs): the 'fast' preset."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=field_help(H, "epochs")),
    batch: Optional[int] = typer.Option(None, "--batch", help=field_help(H, "batch")),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Continue an interrupted run: its folder, its weights/last.pt, or 'latest' (newest unfinished run under --output)."
    ),
    validate_only: bool = typer.Option(False, "--validate-only", help="Only validate --model on the dataset's val split and write the metrics JSON."),
    no_auto_scale: bool = typer.Option(False, "--no-auto-scale", help="Do not size the run from the GPU tier (use preset/defaults and flags)."),
    gpu_tier: Optional[str] = typer.Option(None, "--gpu-tier", help=field_help(H, "gpu_tier")),
    llrd: bool = typer.Option(False, "--llrd", help=field_help(H, "llrd")),
    llrd_decay_rate: Optional[float] = typer.Option(None, "--llrd-decay-rate", help=field_help(H, "llrd_decay_rate")),
    no_tensorboard: bool = typer.Option(False, "--no-tensorboard", help="No TensorBoard scalars and no TensorBoard server."),
    tensorboard_port: Optional[int] = typer.Option(None, "--tensorboard-port", help=field_help(H, "tensorboard_port")),
    no_oom_recovery: bool = typer.Option(False, "--no-oom-recovery", help="Stop with an error on out-of-memory instead of recovering."),
    dynamic_synthetic: Optional[bool] = typer.Option(
        None, "--dynamic-synthetic/--no-dynamic-synthetic", help=field_help(H, "dynamic_synthetic")
    ),
    backgrounds_dir: Optional[str] = typer.Option(None, "--backgrounds-dir", help=field_help(H, "backgrounds_dir")),
    annotated_dir: Optional[str] = typer.Option(None, "--annotated-dir", help=field_help(H, "annotated_dir")),
    synthetic_ratio: Optional[float] = typer.Option(None, "--synthetic-ratio", help=field_help(H, "synthetic_ratio")),
    export: Optional[str] = typer.Option(None, "--export", help=field_help(H, "export")),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help=field_help(H, "imgsz")),
    cfg_name: Optional[str] = CfgNameOption,
    config_file: Optional[Path] = ConfigFileOption,
) -> None:
    """Fine-tune YOLOv8 on a YOLO data.yaml; extra key=value arguments go to Ultralytics."""
    from kitaeru.core.errors import ConfigError

    if fast and cfg_name:
        raise ConfigError("give either --fast or --cfg-name, not both (--fast is the 'fast' preset)")
    flags: dict[str, Any] = {
        "dataset": dataset, "model": model, "output": output, "epochs": epochs, "batch": batch,
        "auto_scale": False if no_auto_scale else None, "gpu_tier": gpu_tier,
        "llrd": True if llrd else None, "llrd_decay_rate": llrd_decay_rate,
        "tensorboard": False if no_tensorboard else None, "tensorboard_port": tensorboard_port,
        "oom_recovery": False if no_oom_recovery else None, "dynamic_synthetic": dynamic_synthetic,
        "backgrounds_dir": backgrounds_dir, "annotated_dir": annotated_dir, "synthetic_ratio": synthetic_ratio,
        "export": export, "device": device, "imgsz": imgsz,
    }
    passthrough = parse_passthrough(list(ctx.args))
    if passthrough:
        flags["ultralytics"] = passthrough
    if resume:
        if validate_only or fast or cfg_name or config_file:
            raise ConfigError("--resume continues a run with its own config: it cannot be combined with --validate-only, --fast, --cfg-name or --config")
        from kitaeru.core.config import load_config
        from kitaeru.recipes.detect.train import resume_detector

        given = {k: v for k, v in flags.items() if v is not None}
        load_config(DetectConfig, RECIPE, overrides=given)  # the flags alone must be valid values
        resume_detector(resume, given)
        return
    config = build_config(DetectConfig, RECIPE, "fast" if fast else cfg_name, config_file, **flags)
    if validate_only:
        from kitaeru.recipes.detect.validate import validate_model

        validate_model(config)
        return
    from kitaeru.recipes.detect.train import train_detector

    train_detector(config)
