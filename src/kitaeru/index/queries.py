"""Turning a text or an image into a query vector with the same encoder that made an index.

The index's ``X.index.json`` records the model, weights, pooling, image size and resize mode of its
vectors; :func:`create_query_encoder` recreates that encoder (``kitaeru.models.image_encoders``,
imported only here and only when a query has to be encoded). Random-init encoders
(``pretrained: none``) are created under a fixed seed both when embedding and here, so their
weights, and therefore their vectors, match.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from kitaeru.core.errors import ConfigError



def pretrained_argument(value: str | None) -> str | None:
    """The ``pretrained`` value as ``create_image_encoder`` takes it (``"none"`` → ``None``)."""
    if value is None or str(value).strip().lower() in ("", "none", "null", "random"):
        return None
    return str(value)


def create_encoder(model: str, *, pretrained: str | None, pool: str | None, image_size: int | None,
                   resize: str | None, device: str = "cpu") -> Any:
    """An ``ImageEncoder`` from recorded settings (random-init weights are seeded by the factory)."""
    from kitaeru.models.image_encoders import create_image_encoder

    return create_image_encoder(model, pretrained=pretrained_argument(pretrained), pool=pool or "default", image_size=image_size,
                                resize=resize or "crop", device=device)


def create_query_encoder(info: Any, device: str = "cpu") -> Any:
    """The encoder that made an index's vectors, from its :class:`~kitaeru.index.faiss_index.IndexInfo`."""
    if not getattr(info, "model", None):
        raise ConfigError("--text/--image: this index does not record the model that made its vectors "
                          "(it was built from a bare .npy); search it with --queries Q.npy")
    return create_encoder(info.model, pretrained=info.pretrained, pool=info.pool, image_size=info.image_size,
                          resize=info.resize, device=device)


def encode_text_queries(encoder: Any, texts: list[str]) -> np.ndarray:
    """(n, dim) text vectors in the image space of a CLIP-family ``encoder`` (not normalised)."""
    if not getattr(encoder, "supports_text", False):
        raise ConfigError(f"--text: model '{encoder.name}' has no text tower; text search needs a CLIP-family "
                          "(open_clip:...) model")
    return np.asarray(encoder.encode_text(list(texts)), dtype=np.float32)


def encode_image_queries(encoder: Any, sources: list[str | os.PathLike | bytes]) -> np.ndarray:
    """(n, dim) vectors of images given as paths, URLs or bytes (not normalised)."""
    from kitaeru.data.images import open_image

    images = [open_image(s, min_side=encoder.image_size) for s in sources]
    return np.asarray(encoder.encode_images(images), dtype=np.float32)
