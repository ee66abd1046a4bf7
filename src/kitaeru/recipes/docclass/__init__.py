"""Document-type recognition by metric learning: ``kitaeru docclass train|evaluate|export|register|classify``.

The job, in order:

1. **train**: every image of a template pool (a folder; generated sample templates when none is
   given) in every rotation × flip is a class; a small timm backbone (LCNet-050) with a normalised
   embedding head learns features from synthetic *photos* of those templates (perspective, crop,
   lighting, shadow, blur, JPEG, noise) with a CosFace/ArcFace margin loss. Validation scores all
   pairs of held-out photos (AUROC, TPR at fixed FPRs); the threshold at ``train.threshold_fpr``
   becomes the model's ``unknown`` threshold. A run is ``<output-dir>/<name>`` with kitaeru's
   evidence; Ctrl-C ends it ``interrupted`` and prints the ``--resume`` command.
2. **evaluate**: the same metric on fresh photos of any template folder, from a checkpoint or the
   exported ONNX model: how well the features separate documents the model never saw.
3. **export** (``export-onnx``): the inference branch (backbone + head, no loss weights) to ONNX as
   the config's ``onnx:`` section says, checked with onnx.checker and against PyTorch, with a sidecar
   ``<model>.onnx.json`` carrying preprocessing, feature size and the ``unknown`` threshold.
4. **register**: the feature of every template image into a bank file (``bank.npz``).
5. **classify**: each photo's best-matching registered template by cosine similarity, or
   ``unknown`` below the threshold. With an ONNX model, register and classify never import PyTorch.

Modules: ``config`` (schemas), ``checks`` (cheap checks), ``documents`` and ``sample_documents``
(template pools, class scheme, synthetic photos, sample templates), ``data``, ``model`` (the network),
``module`` (its Lightning training module), ``metrics``, ``training``, ``checkpoint``, ``evaluation``,
``export``, ``inference``, ``calibration`` and ``bank``.
This file imports only the schemas: each entry imports its heavy parts inside.
"""

from __future__ import annotations

import json
from typing import Any

import click

from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe

from . import checks
from .config import ClassifyConfig, EvaluateConfig, ExportConfig, RegisterConfig, TrainConfig


# ---- entries ------------------------------------------------------------------------------------
def train(config: TrainConfig) -> dict[str, Any]:
    """Train (or ``--resume``) a run; returns its ``training_result.json``."""
    from .training import run_training

    return run_training(config)


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """AUROC and TPR@FPR of a model on fresh photos of a template folder."""
    from .evaluation import evaluate_model

    return evaluate_model(config)


def export(config: ExportConfig) -> dict[str, Any]:
    """Export a checkpoint's inference branch to ONNX; returns the sidecar (export report included)."""
    from .export import export_model

    return export_model(config)


def register(config: RegisterConfig) -> dict[str, Any]:
    """Embed every template of a folder into a bank file."""
    from .bank import register_templates
    from .inference import load_feature_model

    return register_templates(load_feature_model(config.model, device=config.device), config.templates, config.output,
                              target_fpr=config.target_fpr, calibrate=config.calibrate)


def classify(config: ClassifyConfig) -> list[dict[str, Any]]:
    """Label each image with its best registered template, or ``unknown``."""
    from .bank import classify_images, load_bank
    from .inference import load_feature_model

    bank = load_bank(config.bank)  # a wrong bank file fails before the model loads
    model = load_feature_model(config.model, device=config.device)
    return classify_images(model, bank, config.images, threshold=config.threshold)


# ---- human summaries (without --json) -----------------------------------------------------------
def _train_summary(result: dict[str, Any]) -> None:
    from kitaeru.core.console import print_table

    rows = [(k, result["metrics"].get(k), (result.get("untrained_metrics") or {}).get(k)) for k in result["metrics"]]
    print_table(f"docclass run {result.get('run_dir')}", ["metric", "best checkpoint", "untrained"], rows)
    threshold = result.get("unknown_threshold")
    shown = f"{threshold:.4f}" if isinstance(threshold, float) else threshold
    click.echo(f"best weights: {result['best_weights']}  (unknown threshold {shown} at FPR {result['threshold_fpr']:g})")


def _evaluate_summary(result: dict[str, Any]) -> None:
    from kitaeru.core.console import print_table

    rows = [(k, f"{v:.4f}") for k, v in result["metrics"].items()]
    rows.append((f"threshold at FPR {result['threshold_fpr']:g}", f"{result['threshold']:.4f}"))
    stored = result.get("stored_threshold")
    if stored:
        rows.append((f"stored threshold {stored['value']:.4f}", f"TPR {stored['tpr']:.4f}, FPR {stored['fpr']:.2e}"))
    bank = result.get("bank")
    if bank:
        rows.append((f"bank thresholds (target FPR {bank['target_fpr']:g})",
                     f"TPR {bank['tpr']:.4f}, FPR {bank['achieved_fpr']:.2e} on {bank['impostor_photos']} fresh photos"))
    print_table(f"docclass evaluate: {result['photos']} fresh photo(s) of {result['templates']} template(s) × "
                f"{len(result['orientations'])} orientation(s)", ["metric", "value"], rows)


def _export_summary(sidecar: dict[str, Any]) -> None:
    from kitaeru.core.console import print_table

    report = sidecar["export"]
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


def _register_summary(summary: dict[str, Any]) -> None:
    from kitaeru.core.console import info, warn

    for item in summary["skipped"]:
        warn(f"skipped {item['reason']}")
    info(f"registered {summary['templates']} template(s), {len(summary['labels'])} label(s), {summary['feature_dim']}-d")
    calibration = summary.get("calibration")
    if calibration:
        info(f"unknown thresholds calibrated on {calibration['impostor_photos']} impostor photo(s): FPR "
             f"{calibration['achieved_fpr']:.2e} (target {calibration['target_fpr']:g}), TPR {calibration['tpr']:.3f}")
        weak = [label for label, tpr in calibration["per_label_tpr"].items() if tpr < 0.5]
        if weak:
            warn(f"fewer than half the photos of {', '.join(weak[:5])} pass their threshold: they look like other "
                 "documents to this model (a larger model or more training separates them)")
    click.echo(summary["bank"])


def _classify_summary(results: list[dict[str, Any]]) -> None:
    from kitaeru.core.console import print_table

    print_table(
        f"docclass classify ({len(results)} image(s))",
        ["image", "label", "score", "best match", "threshold"],
        [(r["image"], r["label"], r["score"], r["best_match"], r["threshold"]) for r in results],
    )


RECIPE = Recipe(
    name="docclass",
    help=JOBS["docclass"],
    modes=[
        Mode(
            "train", TrainConfig, train,
            "Train the feature network on synthetic photos of a template pool (every template × rotation × flip is a class).\n\n"
            "Writes <output-dir>/<name> (name, name2, ...): config.yaml, results.csv, training_result.json, "
            "weights/best.ckpt and last.ckpt, tensorboard/. Ctrl-C stops it and prints the --resume command.",
            examples=[
                "kitaeru docclass train --cfg-name cpu_quickstart --data-dir data/templates",
                "kitaeru docclass train --cfg-name lcnet050_cosface_96 --data-dir templates/ --epochs 20 --batch 256",
                "kitaeru docclass train --resume latest",
                "kitaeru docclass train --cfg-name cpu_quickstart augment.perspective=0.2 --set optim.weight_decay=0.05",
            ],
            summary=_train_summary, check=checks.check_train, presets=True,
        ),
        Mode(
            "evaluate", EvaluateConfig, evaluate,
            "AUROC and TPR@FPR of a model (checkpoint or ONNX) on fresh synthetic photos of any template folder.",
            examples=[
                "kitaeru docclass evaluate --model runs/docclass/cpu_quickstart/weights/best.ckpt --templates data/templates",
                "kitaeru docclass evaluate --model model.onnx --templates new_templates/ --samples-per-class 8 --json",
            ],
            summary=_evaluate_summary, check=checks.check_evaluate,
        ),
        Mode(
            "export", ExportConfig, export,
            "Export the inference branch (backbone + head) as the config's onnx: section says, then check it against PyTorch.",
            examples=[
                "kitaeru docclass export --checkpoint runs/docclass/cpu_quickstart/weights/best.ckpt --output model.onnx",
                "kitaeru docclass export-onnx --cfg-name lcnet050_cosface_96 --checkpoint best.ckpt --output model.onnx",
                "kitaeru docclass export --checkpoint best.ckpt onnx.options.opset_version=17",
            ],
            summary=_export_summary, check=checks.check_export, aliases=("export-onnx",), presets=True,
            passthrough_field="settings",
        ),
        Mode(
            "register", RegisterConfig, register,
            "Compute the feature of every template image and write the bank.",
            examples=["kitaeru docclass register --model model.onnx --templates data/templates --output bank.npz"],
            summary=_register_summary, check=checks.check_register,
        ),
        Mode(
            "classify", ClassifyConfig, classify,
            "Label each image with its best-matching registered template, or 'unknown' below the threshold.",
            examples=["kitaeru docclass classify --model model.onnx --bank bank.npz --image data/photos",
                      "kitaeru docclass classify --model model.onnx --bank bank.npz photo1.jpg photo2.jpg --json"],
            summary=_classify_summary, check=checks.check_classify, positional_field="images",
        ),
    ],
)
