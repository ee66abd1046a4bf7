"""The scene vector DB (``vector_db.json``): read both shapes the original tools wrote, write one.

Written (versioned) shape::

    {"version": "1.0", "description": "...", "total_scenes": N,
     "embedding_dim": {"text": 256, "image": 256},
     "scenes": [{"scene_id", "description", "location", "image_path", "image_url",
                 "text_embedding": [...], "image_embedding": [...], "umap_coords": [x, y],
                 "metadata": {...}}, ...]}

Also read: the flat list ``[{"vec", "type": "text"|"image", "text", "scene_id", "image_path"}, ...]``
(two items per scene). Extra top-level keys (``data_dir``, ``encoders``...) are kept in ``extra``.

Use::

    db = load_vector_db("runs/quickstart/vector_db.json")
    db.scenes[0]["scene_id"], db.text_embeddings.shape, db.image_embeddings.shape
    hits = db.search(query_vector, top_k=5)         # [(row, cosine score), ...] against image_embeddings
    db.save("copy.json")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from kitaeru.core.vectors import l2_normalize
from kitaeru.core.errors import DataError

VERSION = "1.0"
# The file name of the DB in a multimodal output folder (written by training, read by search, map, serve).
VECTOR_DB_FILE = "vector_db.json"
_RESERVED = {"version", "description", "total_scenes", "embedding_dim", "scenes"}


@dataclass
class VectorDB:
    """Scenes (records without their vectors) plus ``(N, D)`` text and image embedding arrays.

    ``image_embeddings`` are the scene side of the joint space (image, fused with the time series
    when the model was trained with one); ``text_embeddings`` embed each scene's captions.
    """

    scenes: list[dict[str, Any]]
    text_embeddings: np.ndarray
    image_embeddings: np.ndarray
    description: str = ""
    version: str = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.scenes)
        for name in ("text_embeddings", "image_embeddings"):
            array = np.asarray(getattr(self, name), dtype=np.float32)
            setattr(self, name, array.reshape(n, -1) if n else array.reshape(0, array.shape[-1] if array.ndim == 2 else 0))

    def __len__(self) -> int:
        return len(self.scenes)

    @property
    def scene_ids(self) -> list[str]:
        return [str(s.get("scene_id")) for s in self.scenes]

    def search(self, query: np.ndarray, *, top_k: int = 5, against: str = "image") -> list[tuple[int, float]]:
        """The ``top_k`` rows most similar (cosine) to ``query`` as ``[(row, score), ...]``, best first.

        ``against="image"`` compares with the scene side (what text and image queries are trained
        to match), ``"text"`` with the scenes' caption embeddings.
        """
        if against not in ("image", "text"):
            raise ValueError(f"against must be 'image' or 'text', not {against!r}")
        matrix = self.image_embeddings if against == "image" else self.text_embeddings
        q = l2_normalize(np.asarray(query, dtype=np.float32).reshape(-1))
        if q.shape[0] != matrix.shape[1]:
            raise DataError(f"query has {q.shape[0]} dimensions but the vector DB's {against} embeddings have {matrix.shape[1]}")
        scores = l2_normalize(matrix) @ q
        k = max(0, min(int(top_k), len(scores)))
        order = np.argsort(-scores, kind="stable")[:k]
        return [(int(i), float(scores[i])) for i in order]

    # ---- (de)serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON shape (embeddings as lists rounded to 6 decimals)."""
        scenes = []
        for record, t, v in zip(self.scenes, self.text_embeddings, self.image_embeddings):
            item = {
                "scene_id": record.get("scene_id"),
                "description": record.get("description", ""),
                "location": record.get("location", ""),
                "image_path": record.get("image_path", ""),
                "image_url": record.get("image_url", ""),
                "text_embedding": _rounded(t),
                "image_embedding": _rounded(v),
                "umap_coords": list(record.get("umap_coords") or []),
                "metadata": record.get("metadata") or {},
            }
            item.update({k: val for k, val in record.items() if k not in item})
            scenes.append(item)
        return {
            "version": self.version,
            "description": self.description,
            "total_scenes": len(self.scenes),
            "embedding_dim": {"text": int(self.text_embeddings.shape[1]), "image": int(self.image_embeddings.shape[1])},
            **self.extra,
            "scenes": scenes,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the versioned shape atomically."""
        from kitaeru.core.storage import atomic_write_json

        atomic_write_json(path, self.to_dict(), indent=None)

    @classmethod
    def from_json(cls, data: Any, source: str = "vector_db.json") -> "VectorDB":
        """Build from either JSON shape (see the module docstring)."""
        if (isinstance(data, list) and not data) or (isinstance(data, dict) and data.get("scenes") == []):
            raise DataError(f"{source}: the vector DB holds no scenes")
        if isinstance(data, list):
            return _from_flat(data, source)
        if isinstance(data, dict) and isinstance(data.get("scenes"), list):
            return _from_versioned(data, source)
        raise DataError(f"{source}: not a vector DB (expected a list of vectors or an object with 'scenes')")


def _rounded(vector: Iterable[float]) -> list[float]:
    return [round(float(x), 6) for x in vector]


def _vector(value: Any, where: str) -> np.ndarray:
    try:
        vec = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: embedding is not a list of numbers") from exc
    if vec.ndim != 1 or vec.size == 0:
        raise DataError(f"{where}: embedding must be a non-empty list of numbers")
    return vec


def _stack(vectors: list[np.ndarray], what: str, source: str) -> np.ndarray:
    sizes = {v.shape[0] for v in vectors}
    if len(sizes) > 1:
        raise DataError(f"{source}: {what} embeddings have different lengths ({sorted(sizes)})")
    return np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)


def _from_versioned(data: dict, source: str) -> VectorDB:
    records, texts, images = [], [], []
    for i, item in enumerate(data["scenes"]):
        where = f"{source}: scenes[{i}]"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object")
        for key in ("text_embedding", "image_embedding"):
            if key not in item:
                raise DataError(f"{where}: missing '{key}'")
        texts.append(_vector(item["text_embedding"], f"{where}.text_embedding"))
        images.append(_vector(item["image_embedding"], f"{where}.image_embedding"))
        records.append({k: v for k, v in item.items() if k not in ("text_embedding", "image_embedding")})
    extra = {k: v for k, v in data.items() if k not in _RESERVED}
    return VectorDB(
        scenes=records, text_embeddings=_stack(texts, "text", source), image_embeddings=_stack(images, "image", source),
        description=str(data.get("description") or ""), version=str(data.get("version") or VERSION), extra=extra,
    )


def _from_flat(items: list, source: str) -> VectorDB:
    by_scene: dict[str, dict[str, Any]] = {}
    for i, item in enumerate(items):
        where = f"{source}: item {i}"
        if not isinstance(item, dict) or "vec" not in item or "scene_id" not in item:
            raise DataError(f"{where}: expected an object with 'vec', 'type' and 'scene_id'")
        kind = item.get("type")
        if kind not in ("text", "image"):
            raise DataError(f"{where}: 'type' must be 'text' or 'image' (got {kind!r})")
        entry = by_scene.setdefault(str(item["scene_id"]), {"scene_id": item["scene_id"]})
        entry[kind] = _vector(item["vec"], where)
        if kind == "text" and item.get("text"):
            entry["description"] = item["text"]
        if item.get("image_path"):
            entry["image_path"] = item["image_path"]
    records, texts, images = [], [], []
    for scene_id, entry in by_scene.items():
        for kind in ("text", "image"):
            if kind not in entry:
                raise DataError(f"{source}: scene '{scene_id}' has no '{kind}' vector")
        texts.append(entry.pop("text"))
        images.append(entry.pop("image"))
        entry.setdefault("description", "")
        entry.setdefault("image_path", "")
        entry.setdefault("location", "")
        entry.setdefault("metadata", {})
        records.append(entry)
    return VectorDB(
        scenes=records, text_embeddings=_stack(texts, "text", source), image_embeddings=_stack(images, "image", source),
        description="converted from the flat vector list", version="flat",
    )


def load_vector_db(path: str | os.PathLike) -> VectorDB:
    """Read ``vector_db.json`` (either shape; local path or URL)."""
    from kitaeru.core.storage import read_json

    return VectorDB.from_json(read_json(path), str(path))
