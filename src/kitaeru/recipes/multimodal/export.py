"""Export the deliverables of a trained model: projector weights, ``query_encoder.json``,
``vector_db.json`` and ``scenes_with_umap.json`` (at the end of training, or with
``--skip-training`` from the projectors already in an output folder)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from kitaeru.core.console import info, warn
from kitaeru.core.device import DeviceInfo
from kitaeru.core.run import RunFolder
from kitaeru.core.run_setup import given_keys
from kitaeru.core.storage import atomic_path, atomic_write_json, is_remote
from kitaeru.core.vectors import l2_normalize
from kitaeru.data.scenes import Scene
from kitaeru.data.vector_db import VECTOR_DB_FILE, VectorDB
from kitaeru.models.scene_query import (
    IMAGE_PROJECTOR_FILE,
    QUERY_ENCODER_FILE,
    TEXT_PROJECTOR_FILE,
    TIMESERIES_ENCODER_FILE,
    encoder_info,
)

from .config import MultimodalConfig
from .data import load_scenes
from .features import EncoderSpec, SceneFeatures
from .inference import all_scene_tensors, load_trained_model, require_trained, trained_features
from .model import SceneSearchModel, recall_by_direction

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


def encoders_not_trained_with(config: MultimodalConfig, trained: dict[str, Any]) -> list[str]:
    """The encoder settings given now (whatever their value, the default too) that name another
    encoder than the projectors were trained with: ``--skip-training`` uses the trained ones."""
    return sorted(f"--{key.replace('_', '-')}" for key in given_keys(config) & {"text_encoder", "image_encoder"}
                  if getattr(config, key) != trained[key])


def export_trained(config: MultimodalConfig, device: DeviceInfo) -> dict[str, Any]:
    """``--skip-training``: embed the data with the projectors already in ``--output-dir`` and write
    ``vector_db.json`` + ``scenes_with_umap.json`` (the training evidence is kept; the export is
    added to ``training_result.json`` under ``last_export``)."""
    out = Path(str(config.output_dir))
    info_ = require_trained(out, "--skip-training")
    if encoders_not_trained_with(config, info_):
        warn(f"--skip-training uses the encoders the projectors were trained with ({info_['text_encoder']}, {info_['image_encoder']})")
    scene_set = load_scenes(config, out)
    feats = trained_features(out, info_, scene_set.scenes, device=device.device, topics=config.mcap_topics,
                            workers=config.workers, batch_size=config.encode_batch_size)
    model = load_trained_model(out, info_)
    metrics = model.recall(all_scene_tensors(feats))
    files = export_vector_db(model, feats, scene_set.scenes, out, data_dir=data_source_label(scene_set.source),
                             encoders={"text": info_["text_encoder"], "image": info_["image_encoder"]})
    run = RunFolder(out)
    run.record_skipped(scene_set.skipped + feats.skipped)
    previous = run.read_result() or {}
    kept = {k: v for k, v in previous.items() if k not in ("status", "library_versions", "finished_at", "skipped_inputs", "last_export")}
    export = {"data": scene_set.source, "scenes": len(feats), "recall_all_scenes": recall_by_direction(metrics),
              "files": files, "device": device.as_dict()}
    run.write_result(previous.get("status", "exported"), **kept, last_export=export)
    run.close()
    if config.s3_output:
        from kitaeru.core.storage import upload_dir

        upload_dir(out, config.s3_output)
        export["uploaded_to"] = config.s3_output
    return export
