"""Verification metrics over all pairs of features: AUROC, TPR at fixed FPRs and the threshold.

Every pair of validation features is scored by cosine similarity; pairs of the same class are
positives, all others negatives (the original DocClassifier's protocol). The threshold for a target FPR is the
lowest score that keeps the share of negatives at or above it within the target; it becomes the
classifier's ``unknown`` threshold. NumPy only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

FPR_TARGETS = (1e-4, 1e-3, 1e-2, 1e-1)


def fpr_key(target: float) -> str:
    """``1e-3`` → ``"fpr1e-3"`` (the suffix used in metric names)."""
    return "fpr" + f"{target:.0e}".replace("e-0", "e-").replace("e+0", "e")


def pair_scores(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of all unordered pairs, split into (positives, negatives)."""
    feats = np.asarray(features, dtype=np.float32)
    feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    sims = feats @ feats.T
    upper = np.triu_indices(len(feats), k=1)
    scores = sims[upper]
    same = labels[upper[0]] == labels[upper[1]]
    return scores[same], scores[~same]


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    scores = np.concatenate([positives, negatives])
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    # Mid-rank of each distinct value (1-based), so ties get their average rank.
    ends = np.cumsum(counts)
    mid_ranks = ends - (counts - 1) / 2.0
    ranks = mid_ranks[inverse]
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def threshold_at_fpr(negatives: np.ndarray, target: float) -> float:
    """Lowest score such that at most ``floor(target × #negatives)`` negatives reach it."""
    ordered = np.sort(negatives)[::-1]
    allowed = int(np.floor(target * len(ordered)))
    if allowed >= len(ordered):
        return float(ordered[-1])
    return float(np.nextafter(np.float32(ordered[allowed]), np.float32(np.inf)))


def pairwise_roc(
    features: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    fpr_targets: Sequence[float] = FPR_TARGETS,
    threshold_fpr: float = 1e-3,
) -> dict[str, float]:
    """``auroc``, ``tpr_<fpr>`` for each target, ``threshold`` (at ``threshold_fpr``) and pair counts."""
    positives, negatives = pair_scores(features, np.asarray(labels))
    if len(positives) == 0 or len(negatives) == 0:
        raise ValueError("pairwise ROC needs at least two samples of one class and two classes")
    out: dict[str, float] = {"auroc": auroc(positives, negatives)}
    for target in fpr_targets:
        out[f"tpr_{fpr_key(target)}"] = float(np.mean(positives >= threshold_at_fpr(negatives, target)))
    out["threshold"] = threshold_at_fpr(negatives, threshold_fpr)
    out["positive_pairs"] = int(len(positives))
    out["negative_pairs"] = int(len(negatives))
    return out
