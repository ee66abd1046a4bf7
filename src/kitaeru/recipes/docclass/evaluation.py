"""``kitaeru docclass evaluate``: the recipe's metric on photos the model never saw.

Every template of a folder (any folder: the training pool, or documents the model was never
trained on) in every orientation the model knows is a class; ``samples_per_class`` fresh synthetic
photos are drawn per class from seeds far from any training or validation draw, embedded by the
model (a checkpoint on PyTorch, or the exported ONNX on onnxruntime) and scored over all pairs:
AUROC, TPR at FPR 1e-4 ... 1e-1, the threshold at the model's FPR, and how the model's stored
``unknown`` threshold does on these pairs.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from kitaeru.core.console import info
from kitaeru.core.errors import ConfigError, DataError

from .config import EvaluateConfig
from .documents import AugmentedDocuments, DocumentAugment, Orientation, orientation_name, orientations, read_template_pool
from .inference import FeatureModel, load_feature_model
from .metrics import FPR_TARGETS, auroc, fpr_key, pair_scores, threshold_at_fpr

# Training draws count up from 0 and validation draws start at 1e12: evaluation starts at 2e12.
EVALUATION_SEED_OFFSET = 2 * 10**12
FLIP_NAMES = {"h": "horizontal", "v": "vertical"}


def parse_orientation(name: str) -> Orientation:
    """``"rot90+hflip"`` → ``(90, "horizontal")`` (the inverse of :func:`orientation_name`)."""
    head, _, flip = name.partition("+")
    try:
        rotation = int(head.removeprefix("rot"))
    except ValueError:
        raise DataError(f"unknown orientation '{name}' stored with the model") from None
    if not flip:
        return rotation, "none"
    if flip not in ("hflip", "vflip"):
        raise DataError(f"unknown orientation '{name}' stored with the model")
    return rotation, FLIP_NAMES[flip[0]]


def model_orientations(model: FeatureModel, config: EvaluateConfig) -> list[Orientation]:
    """The orientations to test: the config's, else the ones the model was trained on, else upright."""
    stored = model.info.get("orientations") or (model.info.get("classes") or {}).get("orientations")
    trained = [parse_orientation(n) for n in stored] if stored else [(0, "none")]
    if config.rotations is None and config.flips is None:
        return trained
    rotations = config.rotations or list(dict.fromkeys(r for r, _ in trained))
    flips = config.flips or list(dict.fromkeys(f for _, f in trained))
    return orientations(rotations, flips)


def photo_settings(model: FeatureModel, config: EvaluateConfig) -> dict[str, Any]:
    """The augmentations the model was trained with (stored with it), with the ones given now on top."""
    from .config import AugmentSection

    trained = model.info.get("augment") or {}
    try:
        base = AugmentSection.model_validate(trained)
    except ValueError:  # a sidecar from another version: fall back to the defaults
        base = AugmentSection()
    return AugmentSection.model_validate({**base.model_dump(), **config.augment.model_dump(exclude_unset=True)}).model_dump()


def evaluate_model(config: EvaluateConfig) -> dict[str, Any]:
    """Draw the photos, embed them and score all pairs; returns the JSON-able result."""
    import torch
    from torch.utils.data import DataLoader

    model = load_feature_model(config.model, device=config.device)
    pool = read_template_pool(config.templates, max_side=max(config.template_side, model.image_size))
    classes = model_orientations(model, config)
    if len(pool) * len(classes) < 2:
        raise ConfigError(
            f"{config.templates}: one template in one orientation is one class; evaluation needs two "
            "(more templates, or --rotations/--flips)"
        )
    settings = photo_settings(model, config)
    augment = DocumentAugment(model.image_size, mean=model.mean, std=model.std, **settings)
    photos = AugmentedDocuments(pool.images, classes, config.samples_per_class, augment,
                                draw_seed=EVALUATION_SEED_OFFSET + config.seed * 10**6)
    workers = config.workers if config.workers is not None else min(4, max(0, (os.cpu_count() or 1) - 1))
    info(f"evaluating {model.path} ({model.kind}) on {len(photos)} fresh photo(s): {len(pool)} template(s) × "
         f"{len(classes)} orientation(s) × {config.samples_per_class}")
    loader = DataLoader(photos, batch_size=config.batch_size, shuffle=False, num_workers=workers)
    features, labels = [], []
    with torch.inference_mode():
        for images, targets in loader:
            features.append(np.asarray(model.run_batch(images.numpy()), dtype=np.float32))
            labels.append(targets.numpy())
    feats = np.concatenate(features)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    positives, negatives = pair_scores(feats, np.concatenate(labels))
    threshold_fpr = config.threshold_fpr or model.threshold_fpr or 1e-3
    metrics: dict[str, float] = {"auroc": auroc(positives, negatives)}
    for target in FPR_TARGETS:
        metrics[f"tpr_{fpr_key(target)}"] = float(np.mean(positives >= threshold_at_fpr(negatives, target)))
    result: dict[str, Any] = {
        "model": str(model.path),
        "model_kind": model.kind,
        "templates_dir": pool.root,
        "templates": len(pool),
        "orientations": [orientation_name(o) for o in classes],
        "classes": len(pool) * len(classes),
        "photos": len(photos),
        "samples_per_class": config.samples_per_class,
        "seed": config.seed,
        "augment": settings,
        "metrics": metrics,
        "threshold_fpr": threshold_fpr,
        "threshold": threshold_at_fpr(negatives, threshold_fpr),
        "positive_pairs": int(len(positives)),
        "negative_pairs": int(len(negatives)),
        "skipped_inputs": pool.skipped,
    }
    if model.threshold is not None:
        stored = float(model.threshold)
        result["stored_threshold"] = {
            "value": stored,
            "tpr": float(np.mean(positives >= stored)),
            "fpr": float(np.mean(negatives >= stored)),
        }
    if config.bank:
        result["bank"] = evaluate_bank(model, config.bank)
    return result


def evaluate_bank(model: FeatureModel, bank_path: str) -> dict[str, Any]:
    """The open-set rates a bank's calibrated thresholds achieve on fresh photos of its own templates
    and of fresh generic documents (draws the calibration never saw)."""
    from .bank import load_bank
    from .calibration import FRESH_SEED, draw_scores, rates
    from .documents import _read_one

    bank = load_bank(bank_path)
    if bank.dim != model.dim:
        raise DataError(f"{bank.path}: bank features are {bank.dim}-d but {model.path} gives {model.dim}-d features")
    if not bank.thresholds:
        raise ConfigError(f"{bank.path}: this bank has no calibration (register it again to calibrate)")
    side = max(256, 2 * model.image_size)
    try:
        templates = [_read_one(str(p), side) for p in bank.paths.tolist()]
    except DataError as exc:
        raise DataError(f"{bank.path}: a registered template cannot be read any more ({exc})") from exc
    labels = list(bank.thresholds)
    thresholds = np.asarray([bank.thresholds[label] for label in labels], dtype=np.float32)
    own, own_label, negatives = draw_scores(model, templates, bank.labels.tolist(), bank.features, labels, seed=FRESH_SEED)
    fresh = rates(thresholds, own, own_label, negatives)
    stored = bank.calibration or {}
    info(f"bank {bank.path}: FPR {fresh['fpr']:.2e} on {fresh['impostor_photos']} fresh impostor photo(s) "
         f"(target {stored.get('target_fpr')}), TPR {fresh['tpr']:.3f}")
    return {"path": bank.path, "labels": len(labels), "target_fpr": stored.get("target_fpr"),
            "calibration_fpr": stored.get("achieved_fpr"), "achieved_fpr": fresh["fpr"], "tpr": fresh["tpr"],
            "impostor_photos": fresh["impostor_photos"]}
