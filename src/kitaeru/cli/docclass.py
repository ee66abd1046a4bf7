"""``kitaeru docclass ...``: document classifier by metric learning (seed 003).

Only the config schema is imported here; torch, Lightning and onnxruntime load inside the
commands, and ``register``/``classify`` with an ONNX model never import torch at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from kitaeru.cli._common import DEVICE_HELP, CfgNameOption, ConfigFileOption, build_config
from kitaeru.core.config import field_help
from kitaeru.recipes.docclass.config import (
    RECIPE,
    DataSection,
    DocclassConfig,
    LossSection,
    ModelSection,
    OptimSection,
    TrainSection,
)

app = typer.Typer(
    help="Document classifier by metric learning: train, export-onnx, register templates, classify photos.",
    no_args_is_help=True,
)


@app.callback()
def docclass() -> None:
    """Document classifier (seed 003): ``kitaeru docclass train --cfg-name lcnet050_cosface_96``."""


def parse_sets(values: Optional[List[str]]) -> dict[str, Any]:
    """``["augment.perspective=0.2"]`` → ``{"augment.perspective": 0.2}`` (values read as YAML)."""
    import yaml

    from kitaeru.core.errors import ConfigError

    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: expected KEY=VALUE with a dotted config key, got '{item}'")
        try:
            out[key.strip()] = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def resolve_config(
    cfg_name: Optional[str], config_file: Optional[Path], image_size: Optional[int], flags: dict[str, Any]
) -> DocclassConfig:
    """Defaults < preset/--config < flags; ``--image-size`` also sets the ONNX input's spatial size."""
    config = build_config(DocclassConfig, RECIPE, cfg_name, config_file, **flags)
    if image_size is not None:
        config = _validated(lambda: config.with_image_size(image_size), "--image-size")
    return config


@app.command("train")
def train(
    cfg_name: Optional[str] = CfgNameOption,
    config_file: Optional[Path] = ConfigFileOption,
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help=field_help(DataSection, "data_dir")),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help=field_help(TrainSection, "output_dir")),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=field_help(TrainSection, "epochs")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=field_help(TrainSection, "batch_size")),
    lr: Optional[float] = typer.Option(None, "--lr", help=field_help(OptimSection, "lr")),
    image_size: Optional[int] = typer.Option(None, "--image-size", help=field_help(DataSection, "image_size") + " Also sets the ONNX input size."),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    loss: Optional[str] = typer.Option(None, "--loss", help=field_help(LossSection, "name")),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help=field_help(ModelSection, "pretrained")),
    workers: Optional[int] = typer.Option(None, "--workers", help=field_help(DataSection, "workers")),
    seed: Optional[int] = typer.Option(None, "--seed", help=field_help(TrainSection, "seed")),
    no_oom_recovery: bool = typer.Option(False, "--no-oom-recovery", help="Stop with an error on out-of-memory instead of recovering."),
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue the run in this folder from weights/last.ckpt (its config.yaml is the base config)."
    ),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override any config field: --set augment.perspective=0.2 (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print training_result.json to stdout."),
) -> None:
    """Train the feature network on synthetic photos of the template pool (every template × rotation × flip is a class).

    Example: kitaeru docclass train --cfg-name lcnet050_cosface_96 --data-dir templates/ --epochs 20
    """
    from kitaeru.core.errors import ConfigError

    flags: dict[str, Any] = {
        "data.data_dir": data_dir, "train.output_dir": output_dir, "train.epochs": epochs,
        "train.batch_size": batch_size, "optim.lr": lr, "train.device": device, "loss.name": loss,
        "model.pretrained": pretrained, "data.workers": workers, "train.seed": seed,
        "train.oom_recovery": False if no_oom_recovery else None,
    }
    flags.update(parse_sets(sets))
    if resume is not None:
        if cfg_name or config_file:
            raise ConfigError("--resume continues a run with its own config.yaml: do not combine it with --cfg-name or --config")
        if not (resume / "config.yaml").is_file():
            raise ConfigError(f"--resume: {resume} is not a docclass run folder (no config.yaml)")
        config_file = resume / "config.yaml"
    config = resolve_config(cfg_name, config_file, image_size, flags)

    from kitaeru.core.console import print_table
    from kitaeru.recipes.docclass.train import train as run_training

    outcome = run_training(config, cfg_name=cfg_name, resume_dir=resume)
    result = outcome.result
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    rows = [(k, result["metrics"].get(k), result["untrained_metrics"].get(k)) for k in result["metrics"]]
    print_table(f"docclass run {outcome.run_dir}", ["metric", "best checkpoint", "untrained"], rows)
    typer.echo(f"best weights: {result['best_weights']}  (unknown threshold {result['unknown_threshold']:.4f} at FPR {result['threshold_fpr']:g})")


@app.command("export-onnx")
def export_onnx_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="A docclass checkpoint (weights/best.ckpt of a run)."),
    out: Optional[Path] = typer.Option(None, "--out", help="ONNX file to write (default: beside the checkpoint, .onnx)."),
    cfg_name: Optional[str] = CfgNameOption,
    config_file: Optional[Path] = ConfigFileOption,
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Image size of the given config (must match the checkpoint)."),
    images: Optional[List[str]] = typer.Option(None, "--image", help="Real images for the parity check (repeatable; default: generated documents)."),
    sets: Optional[List[str]] = typer.Option(None, "--set", help="Override a config field, e.g. --set onnx.options.opset_version=17."),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Largest allowed |onnxruntime − PyTorch| difference."),
    as_json: bool = typer.Option(False, "--json", help="Print the sidecar JSON (export report included) to stdout."),
) -> None:
    """Export the inference branch (backbone + head) as the config's onnx: section says, then check it.

    Example: kitaeru docclass export-onnx --cfg-name lcnet050_cosface_96 --checkpoint runs/docclass/x/weights/best.ckpt --out model.onnx
    """
    from kitaeru.recipes.docclass.export import export_checkpoint

    overrides = parse_sets(sets)
    config = None
    if cfg_name or config_file or image_size is not None or overrides:
        if not (cfg_name or config_file):
            from kitaeru.recipes.docclass.checkpoint import read_checkpoint

            base = read_checkpoint(checkpoint).config
            config = _validated(lambda: DocclassConfig.model_validate(_merge_dotted(base.model_dump(), overrides)), "--set")
            if image_size is not None:
                config = _validated(lambda: config.with_image_size(image_size), "--image-size")
        else:
            config = resolve_config(cfg_name, config_file, image_size, overrides)
    sidecar = export_checkpoint(checkpoint, out, config=config, config_name=cfg_name, images=images, tolerance=tolerance)
    if as_json:
        typer.echo(json.dumps(sidecar, indent=2))
        return
    report = sidecar["export"]
    from kitaeru.core.console import print_table

    print_table(
        f"ONNX export {report['path']}",
        ["field", "value"],
        [
            ("graph name", report["name"]),
            ("opset", report["opset_version"]),
            ("inputs", json.dumps(report["inputs"])),
            ("outputs", json.dumps(report["outputs"])),
            ("onnx.checker", report["checker"]),
            ("max |ORT − torch| random", f"{report['max_abs_diff_random']:.2e}"),
            ("max |ORT − torch| real", f"{report['max_abs_diff_real']:.2e} ({report['real_inputs_checked']} images)"),
            ("unknown threshold", sidecar["unknown_threshold"]),
        ],
    )


def _validated(build, source: str) -> DocclassConfig:
    from pydantic import ValidationError

    from kitaeru.core.config import format_validation_error
    from kitaeru.core.errors import ConfigError

    try:
        return build()
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def _merge_dotted(base: dict, overrides: dict[str, Any]) -> dict:
    from kitaeru.core.config import deep_merge, unflatten

    return deep_merge(base, unflatten(overrides))


@app.command("register")
def register(
    model: Path = typer.Option(..., "--model", help="model.onnx (onnxruntime, no PyTorch needed) or a docclass checkpoint."),
    templates: str = typer.Option(..., "--templates", help="Folder of template images; label = file stem, or sub-folder name."),
    out: Path = typer.Option(Path("bank.npz"), "--out", help="Bank file to write."),
    device: str = typer.Option("cpu", "--device", help="Device for a checkpoint model (ONNX runs on onnxruntime's CPU)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON to stdout."),
) -> None:
    """Compute the feature of every template and write the bank.

    Example: kitaeru docclass register --model model.onnx --templates templates/ --out bank.npz
    """
    from kitaeru.core.console import info, warn
    from kitaeru.recipes.docclass.bank import register_templates
    from kitaeru.recipes.docclass.inference import load_feature_model

    summary = register_templates(load_feature_model(model, device=device), templates, out)
    for item in summary["skipped"]:
        warn(f"skipped {item['reason']}")
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    info(f"registered {summary['templates']} template(s), {len(summary['labels'])} label(s), {summary['feature_dim']}-d")
    typer.echo(str(out))


@app.command("classify")
def classify(
    images: List[str] = typer.Argument(..., help="Images (or folders of images) to classify."),
    model: Path = typer.Option(..., "--model", help="model.onnx (onnxruntime, no PyTorch needed) or a docclass checkpoint."),
    bank: Path = typer.Option(..., "--bank", help="Bank written by 'docclass register' with the same model."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="Cosine score below which a photo is 'unknown' (default: stored with the model, from the validation ROC at FPR 1e-3)."
    ),
    device: str = typer.Option("cpu", "--device", help="Device for a checkpoint model (ONNX runs on onnxruntime's CPU)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON to stdout."),
) -> None:
    """Label each image with its best-matching registered template, or 'unknown' below the threshold.

    Example: kitaeru docclass classify --model model.onnx --bank bank.npz photo1.jpg photo2.jpg
    """
    from kitaeru.recipes.docclass.bank import classify_images, load_bank
    from kitaeru.recipes.docclass.inference import load_feature_model

    feature_model = load_feature_model(model, device=device)
    results = classify_images(feature_model, load_bank(bank), images, threshold=threshold)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
        return
    from kitaeru.core.console import print_table

    print_table(
        f"docclass classify ({len(results)} image(s))",
        ["image", "label", "score", "best match", "threshold"],
        [(r["image"], r["label"], r["score"], r["best_match"], r["threshold"]) for r in results],
    )
