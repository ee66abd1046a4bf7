"""Encode NEW text and image queries into a trained scene-search space.

A training output folder holds ``query_encoder.json`` (which frozen encoders were used, their
feature sizes, the joint size) beside ``text_projector.pt`` and ``image_projector.pt``. ::

    enc = load_query_encoder("runs/quickstart")            # device="cpu" by default
    q = enc.encode_text(["night, heavy rain, city street"])   # (1, 256), L2-normalised
    v = enc.encode_images([PIL.Image.open("frame.jpg")])      # (1, 256), L2-normalised
    hits = load_vector_db("runs/quickstart/vector_db.json").search(q[0], top_k=5)

Both outputs live in the same space as ``vector_db.json``'s embeddings.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kitaeru.core.errors import ConfigError, DataError

QUERY_ENCODER_FILE = "query_encoder.json"
TEXT_PROJECTOR_FILE = "text_projector.pt"
IMAGE_PROJECTOR_FILE = "image_projector.pt"
TIMESERIES_ENCODER_FILE = "timeseries_encoder.pt"
FORMAT = 1


@dataclass
class QueryEncoder:
    """Frozen encoders + trained projectors; ``encode_*`` return L2-normalised ``(n, embed_dim)`` float32."""

    info: dict[str, Any]
    text_encoder: Any = field(repr=False)
    image_encoder: Any = field(repr=False)
    text_projector: Any = field(repr=False)
    image_projector: Any = field(repr=False)
    device: str = "cpu"

    @property
    def embed_dim(self) -> int:
        return int(self.info["embed_dim"])

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        features = torch.from_numpy(self.text_encoder.encode(list(texts)))
        return self._project(self.text_projector, features)

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        features = self.image_encoder.encode_images(list(images)) if images else np.zeros((0, self.image_encoder.dim), np.float32)
        import torch

        return self._project(self.image_projector, torch.from_numpy(features))

    def _project(self, projector, features) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        if len(features) == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        with torch.inference_mode():
            out = F.normalize(projector(features.to(self.device).float()), dim=-1)
        return out.cpu().numpy().astype(np.float32)


def encoder_info(
    *,
    text_encoder: str,
    image_encoder: str,
    image_pretrained: str | None,
    image_weights: str | None,
    image_size: int,
    image_resize: str,
    text_dim: int,
    image_dim: int,
    embed_dim: int,
    timeseries: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``query_encoder.json`` content written by training."""
    return {
        "format": FORMAT,
        "text_encoder": text_encoder,
        "image_encoder": image_encoder,
        "image_pretrained": image_pretrained,
        "image_weights": str(Path(image_weights).resolve()) if image_weights else None,
        "image_size": int(image_size),
        "image_resize": image_resize,
        "text_dim": int(text_dim),
        "image_dim": int(image_dim),
        "embed_dim": int(embed_dim),
        "text_projector": TEXT_PROJECTOR_FILE,
        "image_projector": IMAGE_PROJECTOR_FILE,
        "timeseries": timeseries,
    }


def read_encoder_info(output_dir: str | os.PathLike) -> dict[str, Any]:
    """``query_encoder.json`` of a training output folder (clear error when it is not one)."""
    from kitaeru.core.storage import read_json

    path = Path(output_dir) / QUERY_ENCODER_FILE
    if not path.is_file():
        raise DataError(f"{path}: not found; is '{output_dir}' the --output-dir of a finished 'kitaeru multimodal train'?")
    info = read_json(path)
    missing = [k for k in ("text_encoder", "image_encoder", "text_dim", "image_dim", "embed_dim") if k not in info]
    if missing:
        raise DataError(f"{path}: missing {', '.join(missing)}")
    return info


def load_projector(path: str | os.PathLike, in_dim: int, out_dim: int, device: str = "cpu"):
    """A projector state dict as an ``nn.Linear`` (shape mismatch or missing file → DataError)."""
    import torch

    from kitaeru.models.projectors import create_projector

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: projector weights not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle/zip errors of a damaged file
        raise DataError(f"{path}: cannot read projector weights ({type(exc).__name__})") from exc
    projector = create_projector(in_dim, out_dim)
    try:
        projector.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: weights do not fit a {in_dim}→{out_dim} projector ({str(exc).splitlines()[0][:160]})") from exc
    return projector.to(device).eval()


def frozen_text_encoder(name: str, device: str = "cpu"):
    """A frozen text encoder, loaded once per process for the same name and device."""
    return _text_encoder(name, device)


def frozen_image_encoder(
    name: str, *, pretrained: str | None = "default", weights: str | None = None, image_size: int | None = None,
    resize: str = "crop", device: str = "cpu",
):
    """A frozen image encoder, loaded once per process for the same settings (and weights file)."""
    stamp = None
    if weights:
        try:
            st = os.stat(weights)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
    return _image_encoder(name, pretrained, weights, stamp, image_size, resize, device)


# Frozen encoders never change, so one process (a test session, a notebook, a server) can share
# them instead of paying their load time again; two entries each is enough for train + query.
@functools.lru_cache(maxsize=2)
def _text_encoder(name: str, device: str):
    from kitaeru.models.text_encoders import create_text_encoder

    return create_text_encoder(name, device=device)


@functools.lru_cache(maxsize=2)
def _image_encoder(name, pretrained, weights, stamp, image_size, resize, device):
    from kitaeru.models.image_encoders import create_image_encoder

    return create_image_encoder(name, pretrained=pretrained, weights=weights, image_size=image_size, resize=resize, device=device)


def load_query_encoder(output_dir: str | os.PathLike, device: str = "cpu") -> QueryEncoder:
    """Everything needed to embed new queries, from a training output folder."""
    info = read_encoder_info(output_dir)
    weights = info.get("image_weights")
    if weights and not Path(weights).is_file():
        raise ConfigError(f"{Path(output_dir) / QUERY_ENCODER_FILE}: image weights file '{weights}' used in training is gone")
    text_encoder = frozen_text_encoder(info["text_encoder"], device=device)
    image_encoder = frozen_image_encoder(
        info["image_encoder"], pretrained=info.get("image_pretrained") or "default", weights=weights,
        resize=info.get("image_resize", "crop"), device=device,
    )
    if info.get("image_size") and image_encoder.image_size != int(info["image_size"]):
        raise ConfigError(
            f"image encoder '{image_encoder.name}' takes {image_encoder.image_size}px images but was trained at {info['image_size']}px"
        )
    for what, enc, key in (("text", text_encoder, "text_dim"), ("image", image_encoder, "image_dim")):
        if enc.dim != int(info[key]):
            raise ConfigError(f"{what} encoder '{enc.name}' gives {enc.dim}-d features but the projectors expect {info[key]}")
    root = Path(output_dir)
    text_projector = load_projector(root / info.get("text_projector", TEXT_PROJECTOR_FILE), info["text_dim"], info["embed_dim"], device)
    image_projector = load_projector(root / info.get("image_projector", IMAGE_PROJECTOR_FILE), info["image_dim"], info["embed_dim"], device)
    return QueryEncoder(info=info, text_encoder=text_encoder, image_encoder=image_encoder,
                        text_projector=text_projector, image_projector=image_projector, device=device)
