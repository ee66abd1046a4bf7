"""Evaluate a trained output: recall@1/5/10 both ways on any scene folder (``kitaeru multimodal evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kitaeru.core.errors import DataError

from .inference import all_scene_tensors, load_trained_model, require_trained, trained_features
from .model import recall_by_direction


def evaluate_output(output_dir: str, data_dir: str, *, device: str = "cpu", limit: int | None = None,
                    mcap_topics=(), workers: int = 2) -> dict[str, Any]:
    """Recall@1/5/10 both ways of a trained output on every readable scene of ``data_dir``."""
    from kitaeru.data.scenes import load_scene_folder

    out = Path(output_dir)
    info_ = require_trained(out, "evaluate")
    scene_set = load_scene_folder(data_dir, limit=limit)
    feats = trained_features(out, info_, scene_set.scenes, device=device, topics=mcap_topics, workers=workers)
    if len(feats) == 0:
        raise DataError(f"{data_dir}: no readable scene to evaluate")
    metrics = load_trained_model(out, info_).recall(all_scene_tensors(feats))
    return {**recall_by_direction(metrics), "scenes": len(feats), "captions": int(len(feats.text)),
            "skipped": len(scene_set.skipped) + len(feats.skipped), "data_dir": str(data_dir)}
