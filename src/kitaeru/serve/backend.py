"""What every search backend offers the API, and the small pieces they share.

A backend is created once when the server starts (models loaded, vectors in memory) and then
answers many requests: each one only encodes the query and searches. Encoding runs under a lock
so concurrent requests take turns on the model (every forward pass already uses all CPU threads
or the whole GPU; running several at once only adds contention), while the search itself is
lock-free.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from kitaeru.core.vectors import l2_normalize

from .safe_files import ImageRoot


class UnsupportedQuery(Exception):
    """The backend cannot answer this kind of query (e.g. text against an image-only model)."""


class VectorDbUnavailable(Exception):
    """This server holds no multimodal vector DB (it was started on an index)."""


class SearchBackend(ABC):
    """Loaded models + vectors + the folder results' images are served from."""

    #: "multimodal" or "index"
    kind: str = ""
    #: what a query may be compared with; the first is the default
    search_targets: tuple[str, ...] = ()
    #: the query encoder's input size: uploads are decoded at reduced scale down to it (JPEG draft),
    #: exactly as the indexed images were
    query_image_size: int | None = None

    def __init__(self, image_root: ImageRoot):
        self.image_root = image_root
        self._encode_lock = threading.Lock()

    # ---- to implement --------------------------------------------------------------------
    @abstractmethod
    def __len__(self) -> int:
        """Number of searchable items."""

    @property
    @abstractmethod
    def supports_text(self) -> bool:
        """Whether ``/text`` can be answered."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Model names, dimensions, sources: shown by ``/health``."""

    @abstractmethod
    def search_text(self, query: str, top_k: int, target: str) -> list[dict[str, Any]]:
        """The ``top_k`` items nearest to a text query, best first."""

    @abstractmethod
    def search_image(self, image: Image.Image, top_k: int, target: str) -> list[dict[str, Any]]:
        """The ``top_k`` items nearest to an image query, best first."""

    @abstractmethod
    def stored_image_path(self, item_id: str) -> str:
        """The image path recorded for ``item_id`` (KeyError when there is no such item)."""

    def vector_db_file(self) -> Path | None:
        """A file already in the versioned vector-DB shape, served as is (None: use ``vector_db``)."""
        return None

    def vector_db(self) -> bytes:
        """The multimodal vector DB as JSON bytes (versioned shape)."""
        raise VectorDbUnavailable("this server was started on an index, not a multimodal output: it has no vector DB")

    # ---- shared --------------------------------------------------------------------------
    def image_file(self, item_id: str) -> Path:
        """The checked real path of an item's image (see :class:`ImageRoot`)."""
        return self.image_root.resolve(self.stored_image_path(item_id))

    def encode(self, fn: Callable[[], np.ndarray]) -> np.ndarray:
        """Run one query encoding with exclusive use of the model."""
        with self._encode_lock:
            return fn()


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """L2-normalised, C-contiguous float32 rows (a single vector becomes one row)."""
    return np.ascontiguousarray(l2_normalize(np.atleast_2d(matrix)))

