"""Save: projector weights, ``query_encoder.json``, ``vector_db.json`` and ``scenes_with_umap.json``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from kitaeru.core.storage import atomic_path, atomic_write_json, is_remote
from kitaeru.data.scenes import Scene
from kitaeru.core.vectors import l2_normalize
from kitaeru.data.vector_db import VECTOR_DB_FILE, VectorDB
from kitaeru.models.scene_query import (
    IMAGE_PROJECTOR_FILE,
    QUERY_ENCODER_FILE,
    TEXT_PROJECTOR_FILE,
    TIMESERIES_ENCODER_FILE,
    encoder_info,
)

from .features import EncoderSpec, SceneFeatures
from .model import SceneSearchModel

SCENES_UMAP_FILE = "scenes_with_umap.json"


def save_state_dict(module: torch.nn.Module, path: Path) -> Path:
    """A plain tensor state dict (loadable with ``torch.load(weights_only=True)``), written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def save_weights(model: SceneSearchModel, out: Path, spec: EncoderSpec, feats: SceneFeatures, steps: int) -> dict[str, str]:
    """Projectors (+ time-series encoder) and the query-encoder description."""
    files = {
        "text_projector": str(save_state_dict(model.text_projector, out / TEXT_PROJECTOR_FILE)),
        "image_projector": str(save_state_dict(model.image_projector, out / IMAGE_PROJECTOR_FILE)),
    }
    series_info = None
    if model.series_encoder is not None:
        files["timeseries_encoder"] = str(save_state_dict(model.series_encoder, out / TIMESERIES_ENCODER_FILE))
        series_info = {"file": TIMESERIES_ENCODER_FILE, "in_dim": model.series_encoder.in_dim, "steps": steps,
                       "hidden": model.series_encoder.hidden, "layers": model.series_encoder.layers}
    info = encoder_info(
        text_encoder=spec.text_encoder, image_encoder=spec.image_encoder, image_pretrained=spec.image_pretrained,
        image_weights=spec.image_weights, image_size=feats.image_size, image_resize=spec.image_resize,
        text_dim=feats.text_dim, image_dim=feats.image_dim, embed_dim=model.hparams.embed_dim, timeseries=series_info,
    )
    atomic_write_json(out / QUERY_ENCODER_FILE, info)
    files["query_encoder"] = str(out / QUERY_ENCODER_FILE)
    return files


@torch.no_grad()
def scene_embeddings(model: SceneSearchModel, feats: SceneFeatures) -> tuple[np.ndarray, np.ndarray]:
    """Per scene: the mean of its caption embeddings (re-normalised) and the scene-side embedding."""
    model = model.cpu().eval()
    text = model.embed_text(torch.from_numpy(feats.text)).numpy()
    series = torch.from_numpy(feats.series) if feats.series is not None and model.series_encoder is not None else None
    scene, _ = model.embed_scene(torch.from_numpy(feats.image), series)
    per_scene = np.zeros((len(feats.image), text.shape[1]), dtype=np.float32)
    np.add.at(per_scene, feats.owner, text)
    return l2_normalize(per_scene), scene.numpy().astype(np.float32)


def data_source_label(source: str) -> str:
    """How a run records where its scenes came from: an absolute local path (readable from any
    working directory, e.g. by the dashboard) or the remote URL as given."""
    return source if is_remote(source) else str(Path(source).resolve())


def export_vector_db(
    model: SceneSearchModel,
    feats: SceneFeatures,
    scenes: Sequence[Scene],
    out: Path,
    *,
    data_dir: str,
    encoders: dict[str, Any],
) -> dict[str, str]:
    """``vector_db.json`` (versioned shape) and ``scenes_with_umap.json`` for the readable scenes.

    The UMAP map (2-D, 15 neighbours, min_dist 0.1, cosine, seed 42) is computed on the scene-side
    embeddings, the vectors that search compares queries with.
    """
    from kitaeru.core.console import info
    from kitaeru.viz.umap_projection import umap_2d

    kept = [scenes[i] for i in feats.kept]
    text, scene = scene_embeddings(model, feats)
    info(f"UMAP of {len(kept)} scene embeddings ...")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*n_jobs value .* overridden.*")  # seeded UMAP is single-threaded
        coords = umap_2d(scene)
    remote = is_remote(data_dir)
    records = []
    for s, xy in zip(kept, coords):
        record = s.record()
        record["image_url"] = f"{data_dir.rstrip('/')}/{s.image_path}" if remote else ""
        record["umap_coords"] = [round(float(xy[0]), 5), round(float(xy[1]), 5)]
        records.append(record)
    db = VectorDB(
        scenes=records, text_embeddings=text, image_embeddings=scene,
        description=f"kitaeru multimodal scene embeddings of {len(records)} scenes from {data_dir}",
        extra={"data_dir": data_dir, "encoders": encoders},
    )
    db.save(out / VECTOR_DB_FILE)
    atomic_write_json(out / SCENES_UMAP_FILE, records)
    return {"vector_db": str(out / VECTOR_DB_FILE), "scenes_with_umap": str(out / SCENES_UMAP_FILE)}
