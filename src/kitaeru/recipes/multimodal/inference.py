"""Use a trained output: reload its projectors and the frozen features of any scenes, and search its
vector DB with a text or an image (``kitaeru multimodal search``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kitaeru.core.console import info
from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.storage import is_remote
from kitaeru.models.scene_query import (
    IMAGE_PROJECTOR_FILE,
    QUERY_ENCODER_FILE,
    TEXT_PROJECTOR_FILE,
    load_projector,
    read_encoder_info,
)

from .features import CACHE_DIR, EncoderSpec, FrozenEncoders, SceneFeatures, SeriesSpec, extract_features
from .model import FeatureTensors, SceneSearchModel


def require_trained(out: Path, flag: str) -> dict[str, Any]:
    """``query_encoder.json`` of ``out``, with a clear error when the output has no trained projectors."""
    if is_remote(str(out)):
        raise ConfigError(f"{flag} needs a local --output-dir holding trained projectors, not {out}")
    missing = [n for n in (QUERY_ENCODER_FILE, TEXT_PROJECTOR_FILE, IMAGE_PROJECTOR_FILE) if not (out / n).is_file()]
    if missing:
        raise DataError(f"{flag}: {out} has no trained projectors ({', '.join(missing)} missing); run 'kitaeru multimodal train' first")
    return read_encoder_info(out)


def load_trained_model(out: Path, info_: dict[str, Any]) -> SceneSearchModel:
    """The projectors (and time-series encoder) of a trained output as a :class:`SceneSearchModel`."""
    series = info_.get("timeseries") or None
    model = SceneSearchModel(int(info_["text_dim"]), int(info_["image_dim"]), int(info_["embed_dim"]),
                             int(series["in_dim"]) if series else 0)
    model.text_projector.load_state_dict(load_projector(out / info_["text_projector"], info_["text_dim"], info_["embed_dim"]).state_dict())
    model.image_projector.load_state_dict(load_projector(out / info_["image_projector"], info_["image_dim"], info_["embed_dim"]).state_dict())
    if series:
        path = out / series["file"]
        try:
            model.series_encoder.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except FileNotFoundError as exc:
            raise DataError(f"{path}: time-series encoder weights not found") from exc
        except RuntimeError as exc:
            raise DataError(f"{path}: weights do not fit the time-series encoder ({str(exc).splitlines()[0][:160]})") from exc
    return model.eval()


def trained_features(out: Path, info_: dict[str, Any], scenes, *, device: str, topics=(), workers: int = 2, batch_size: int = 32) -> SceneFeatures:
    """The (cached) frozen features of ``scenes`` through the encoders a trained output was made with."""
    series = info_.get("timeseries") or None
    spec = SeriesSpec(bool(series), int(series["steps"]) if series else 32, tuple(topics))
    return extract_features(scenes, FrozenEncoders(EncoderSpec.from_info(info_), device), series=spec,
                            cache_dir=out / CACHE_DIR, workers=workers, batch_size=batch_size)


def all_scene_tensors(feats: SceneFeatures) -> FeatureTensors:
    """Every scene of ``feats`` as one evaluation set."""
    return FeatureTensors.build(feats.text, feats.owner, feats.image, feats.series)


def search_output(output_dir: str, *, text: str | None = None, image: str | None = None, top_k: int = 5,
                  device: str = "cpu") -> list[dict[str, Any]]:
    """The ``top_k`` scenes of the output's vector DB nearest to a text or an image query."""
    from kitaeru.data.vector_db import VECTOR_DB_FILE, load_vector_db
    from kitaeru.models.scene_query import load_query_encoder

    if (text is None) == (image is None):
        raise ConfigError("give exactly one of --text or --image")
    if top_k < 1:
        raise ConfigError(f"--top-k: must be at least 1 (got {top_k})")
    out = Path(output_dir)
    require_trained(out, "search")
    db_path = out / VECTOR_DB_FILE
    if not db_path.is_file():
        raise DataError(f"{db_path}: not found; run 'kitaeru multimodal train' (or --skip-training) first")
    db = load_vector_db(db_path)
    encoder = load_query_encoder(out, device=device)
    if text is not None:
        if not text.strip():
            raise ConfigError("--text: the query is empty")
        query = encoder.encode_text([text])[0]
    else:
        from kitaeru.data.images import open_image

        query = encoder.encode_images([open_image(image, min_side=encoder.info.get("image_size"))])[0]
    info(f"searching {len(db)} scenes")
    hits = db.search(query, top_k=top_k, against="image")
    return [{"rank": r + 1, "scene_id": db.scenes[i].get("scene_id"), "score": round(score, 4),
             "description": db.scenes[i].get("description", ""), "image_path": db.scenes[i].get("image_path", "")}
            for r, (i, score) in enumerate(hits)]
