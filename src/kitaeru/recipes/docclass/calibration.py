"""Open-set calibration of a bank: one ``unknown`` threshold per registered label, for a target FPR.

The model's own threshold comes from validation pairs of the *training* templates; documents of a
kind nobody registered (real shop receipts against letter templates, say) can score far above it.
So ``register`` measures, for each label, how high *impostors* score against it:

* photos of the other registered templates (the same synthetic photos training used: warp, light,
  blur, JPEG), and
* generic document-like negatives: freshly rendered ID cards, passports, receipts, forms and
  letters that are none of the registered templates, photographed the same way.

A label's threshold is the lowest score that keeps the share of its impostors at or above it
within the target FPR, and never below the model's own threshold. The photos of the label's own
templates give the TPR at that threshold (how many true photos still pass). Everything is stored
in the bank; ``classify`` applies it and ``evaluate --bank`` re-measures it on fresh draws.
The photos are drawn with torch (torchvision's transforms): without it, register keeps the
model's threshold and says so.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .metrics import threshold_at_fpr

DEFAULT_TARGET_FPR = 1e-3
PHOTOS_PER_TEMPLATE = 8
NEGATIVES_PER_KIND = 12
PHOTOS_PER_NEGATIVE = 2
# Seeds far from training (0...), validation (1e12) and evaluation (2e12) draws.
CALIBRATION_SEED = 3 * 10**12
FRESH_SEED = 4 * 10**12
NEGATIVE_RENDER_SEED = 7_000_000


def photo_augment(model) -> Any:
    """The photo model the network was trained with (stored with it), at its input size."""
    from .config import AugmentSection
    from .documents import DocumentAugment

    try:
        settings = AugmentSection.model_validate(model.info.get("augment") or {}).model_dump()
    except ValueError:  # a sidecar from another version: the defaults
        settings = AugmentSection().model_dump()
    return DocumentAugment(model.image_size, mean=model.mean, std=model.std, **settings)


def generic_negatives(per_kind: int = NEGATIVES_PER_KIND, seed: int = NEGATIVE_RENDER_SEED) -> list[Image.Image]:
    """Rendered documents of every kind the generator knows, none of them a registered template."""
    from .sample_documents import DOCUMENT_KINDS, render_document

    return [render_document(kind, seed + i) for kind in DOCUMENT_KINDS for i in range(per_kind)]


def _photos(images: Sequence[Image.Image], augment: Any, count: int, seed: int) -> list[Image.Image]:
    from .documents import augmented_photo

    return [augmented_photo(image, augment, seed=seed + i * 1000 + j) for i, image in enumerate(images)
            for j in range(count)]


def label_scores(features: np.ndarray, bank_features: np.ndarray, bank_labels: np.ndarray,
                 labels: Sequence[str]) -> np.ndarray:
    """``(N, L)``: each feature's best cosine score against each label's templates."""
    scores = features @ bank_features.T
    return np.stack([scores[:, bank_labels == label].max(axis=1) for label in labels], axis=1)


def draw_scores(model, templates: Sequence[Image.Image], template_labels: Sequence[str], bank_features: np.ndarray,
                labels: Sequence[str], *, seed: int, photos: int = PHOTOS_PER_TEMPLATE,
                negatives: int = NEGATIVES_PER_KIND) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(template photo scores (N, L), their label index (N,), negative photo scores (M, L))``."""
    augment = photo_augment(model)
    bank_labels = np.asarray(template_labels)
    own = _photos(templates, augment, photos, seed)
    own_label = np.repeat([list(labels).index(l) for l in template_labels], photos)
    rendered = generic_negatives(negatives, NEGATIVE_RENDER_SEED + (seed % 997) * 1000)
    others = _photos(rendered, augment, PHOTOS_PER_NEGATIVE, seed + 10**9)
    own_scores = label_scores(model.embed(own), bank_features, bank_labels, labels)
    negative_scores = label_scores(model.embed(others), bank_features, bank_labels, labels)
    return own_scores, own_label, negative_scores


def impostors_of(label: int, own_scores: np.ndarray, own_label: np.ndarray, negative_scores: np.ndarray) -> np.ndarray:
    return np.concatenate([own_scores[own_label != label, label], negative_scores[:, label]])


def accepted(scores: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the best label and whether its score reaches that label's threshold."""
    best = scores.argmax(axis=1)
    return best, scores[np.arange(len(scores)), best] >= thresholds[best]


def rates(thresholds: np.ndarray, own_scores: np.ndarray, own_label: np.ndarray,
          negative_scores: np.ndarray) -> dict[str, float]:
    """Open-set rates of the classify rule: TPR (own photos labelled right) and FPR (impostor photos
    labelled as any template not their own: other templates' photos and the generic negatives)."""
    best, ok = accepted(own_scores, thresholds)
    tpr = float(np.mean(ok & (best == own_label))) if len(own_scores) else float("nan")
    wrong_template = ok & (best != own_label)
    _, negative_ok = accepted(negative_scores, thresholds)
    trials = len(own_scores) + len(negative_scores)
    return {"tpr": tpr, "fpr": float((wrong_template.sum() + negative_ok.sum()) / max(trials, 1)),
            "impostor_photos": int(trials)}


def calibrate(model, templates: Sequence[Image.Image], template_labels: Sequence[str], bank_features: np.ndarray,
              target_fpr: float = DEFAULT_TARGET_FPR) -> dict[str, Any]:
    """Per-label thresholds for ``target_fpr`` and the rates they give on the calibration draws."""
    labels = list(dict.fromkeys(template_labels))
    own_scores, own_label, negative_scores = draw_scores(model, templates, template_labels, bank_features, labels,
                                                         seed=CALIBRATION_SEED)
    floor = float(model.threshold) if model.threshold is not None else -1.0
    impostors = [impostors_of(i, own_scores, own_label, negative_scores) for i in range(len(labels))]
    # An impostor is a false accept if it passes *any* label's threshold, so per-label rates add up:
    # tighten the per-label target until the classify rule as a whole stays within the target.
    per_label_target = target_fpr
    while True:
        thresholds = np.array([max(floor, threshold_at_fpr(scores, per_label_target)) for scores in impostors],
                              dtype=np.float32)
        measured = rates(thresholds, own_scores, own_label, negative_scores)
        if measured["fpr"] <= target_fpr or per_label_target * max(len(s) for s in impostors) < 1:
            break  # within the target, or already above every impostor score
        per_label_target /= 2
    per_label_tpr = {label: float(np.mean(own_scores[own_label == i, i] >= thresholds[i])) for i, label in enumerate(labels)}
    return {"target_fpr": float(target_fpr), "labels": labels, "thresholds": [float(t) for t in thresholds],
            "model_threshold": model.threshold, "achieved_fpr": measured["fpr"], "tpr": measured["tpr"],
            "impostor_photos": measured["impostor_photos"], "per_label_tpr": per_label_tpr,
            "per_label_target_fpr": per_label_target,
            "photos_per_template": PHOTOS_PER_TEMPLATE,
            "generic_negatives": len(negative_scores), "seed": CALIBRATION_SEED}


def calibration_to_arrays(calibration: dict[str, Any]) -> dict[str, np.ndarray]:
    """The bank's npz entries (plain arrays and a JSON string: the bank stays pickle-free)."""
    return {"calibration_labels": np.asarray(calibration["labels"], dtype=str),
            "calibration_thresholds": np.asarray(calibration["thresholds"], dtype=np.float32),
            "calibration": np.asarray(json.dumps(calibration))}
