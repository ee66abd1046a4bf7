"""A Faiss vector index with its metadata table: build, load, add, search.

Python API (used by ``kitaeru index`` and by the search server)::

    from kitaeru.index.faiss_index import build_index, load_index

    index = load_index("indexes/scenes.faiss")     # VectorIndex
    scores, ids = index.search(queries, k=10)     # queries: (n, dim) or (dim,) float
    rows = index.rows(ids[0])                     # metadata dicts (id, path, width, ...) per hit
    index.metadata                                # pyarrow.Table, row i = vector id i ('id', 'path', ...)
    index.info                                    # IndexInfo: type, metric, dim, ntotal, params,
                                                  # model, pretrained, pool, image_size, resize, normalized
    index.prepare_queries(vectors)                # float32 (n, dim), L2-normalised when the index's
                                                  # vectors were (so a raw encoder output can be passed)

    index = build_index(vectors, metadata, index_type="auto", metric="ip", info=embedding_info)
    index.add(more_vectors, more_metadata)        # appends; ids continue from ntotal
    index.save("indexes/scenes.faiss")

Files: ``X.faiss`` (the Faiss index), ``X.index.parquet`` (metadata; row i = id i) and ``X.index.json``
(:class:`IndexInfo`), always replaced together: a save interrupted at any moment leaves the old set or
the new one (``X.index.commit`` lives only while a save switches the files).

Scores: for ``metric="ip"`` the inner product (cosine similarity for normalised vectors; higher is
closer); for ``metric="l2"`` the squared Euclidean distance (lower is closer). Missing results
(k > ntotal) have id ``-1``.

Types: ``flat`` (exact), ``ivfpq`` (inverted lists + product quantisation, then exact re-ranking of
``k_factor × k`` candidates with the stored vectors, so recall holds while the scan stays cheap),
``hnsw`` (graph), and ``auto`` (:mod:`kitaeru.index.auto_tune`: searches code size, lists, probes,
re-ranking depth and graph width on held-out queries and keeps the fastest point whose recall@10
against exact search is ≥ 0.95, within ``max_index_memory``; flat below ``AUTO_FLAT_MAX_N`` vectors).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from kitaeru.core.errors import ConfigError, DataError
from kitaeru.index.embeddings_io import EmbeddingInfo, concat_metadata
# The Faiss side (types, parameters, memory, construction), re-exported for the callers of this module
from kitaeru.index.faiss_factory import (  # noqa: F401
    AUTO_FLAT_MAX_N,
    AUTO_MIN_RECALL,
    INDEX_TYPES,
    METRICS,
    SEARCH_TIME_PARAMS,
    TUNABLE_PARAMS,
    _faiss,
    _metric_code,
    check_memory,
    default_params,
    estimate_index_bytes,
    flat_quantizer,
    format_bytes,
    make_faiss_index,
    new_ivfpq,
    parse_memory,
    resolve_params,
    sidecar_paths,
)

if TYPE_CHECKING:
    import pyarrow as pa

INDEX_FORMAT = "kitaeru-index/1"


@dataclass
class IndexInfo:
    """What the index holds and how it was built (the ``X.index.json`` beside ``X.faiss``)."""

    type: str
    metric: str
    dim: int
    ntotal: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    pretrained: str | None = None
    pool: str | None = None
    image_size: int | None = None
    resize: str | None = None
    normalized: bool | None = None
    kind: str | None = None
    embeddings: list[str] = field(default_factory=list)  # sources added so far
    format: str = INDEX_FORMAT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IndexInfo":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def embedding_info(self) -> EmbeddingInfo:
        return EmbeddingInfo(model=self.model, pretrained=self.pretrained, pool=self.pool, image_size=self.image_size,
                             resize=self.resize, normalized=self.normalized, dim=self.dim, kind=self.kind)


# ---- the index object ----------------------------------------------------------------------
class VectorIndex:
    """A Faiss index, its metadata table (row i = id i) and its :class:`IndexInfo`."""

    def __init__(self, index: Any, metadata: "pa.Table", info: IndexInfo, path: Path | None = None):
        if index.ntotal != len(metadata):
            raise DataError(f"{path or 'index'}: {index.ntotal} vectors but {len(metadata)} metadata rows")
        self.index = index
        self.metadata = metadata
        self.info = info
        self.path = path
        self.info.ntotal = int(index.ntotal)
        self.apply_search_params(info.params)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def apply_search_params(self, params: Mapping[str, Any]) -> None:
        """Set search-time knobs (``nprobe``, ``k_factor``, ``ef_search``) present in ``params``."""
        faiss = _faiss()
        if self.info.type == "ivfpq":
            if params.get("nprobe"):
                faiss.extract_index_ivf(self.index).nprobe = int(params["nprobe"])
            if params.get("k_factor"):
                self._refine().k_factor = float(params["k_factor"])
        elif self.info.type == "hnsw" and params.get("ef_search"):
            self.index.hnsw.efSearch = int(params["ef_search"])
        for key in SEARCH_TIME_PARAMS:
            if params.get(key) and key in TUNABLE_PARAMS.get(self.info.type, ()):
                self.info.params[key] = int(params[key])

    def _refine(self):
        faiss = _faiss()
        return faiss.downcast_index(self.index)

    def prepare_queries(self, queries: np.ndarray, *, normalize: bool | None = None) -> np.ndarray:
        """``queries`` as a C-contiguous float32 (n, dim) matrix, L2-normalised when the indexed
        vectors were (``normalize=None``) or as told."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2:
            raise DataError(f"queries: expected a (n, {self.dim}) matrix, got shape {tuple(q.shape)}")
        if q.shape[1] != self.dim:
            raise DataError(f"queries have dimension {q.shape[1]} but the index holds {self.dim}-d vectors")
        if not np.isfinite(q).all():
            raise DataError("queries hold NaN or infinite values")
        if normalize if normalize is not None else bool(self.info.normalized):
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(q, dtype=np.float32)

    def search(self, queries: np.ndarray, k: int = 10, *, normalize: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest ``k`` for each query → ``(scores, ids)``, both ``(n, k)`` (ids int64, -1 = none)."""
        if k < 1:
            raise ConfigError(f"--top-k: must be at least 1, got {k}")
        q = self.prepare_queries(queries, normalize=normalize)
        if self.ntotal == 0:
            return np.full((len(q), k), np.nan, np.float32), np.full((len(q), k), -1, np.int64)
        scores, ids = self.index.search(q, int(k))
        return scores.astype(np.float32, copy=False), ids.astype(np.int64, copy=False)

    def rows(self, ids: np.ndarray | list[int]) -> list[dict[str, Any]]:
        """Metadata rows (dicts) for ``ids`` in order, skipping ``-1``."""
        wanted = [int(i) for i in np.asarray(ids).reshape(-1) if int(i) >= 0]
        if not wanted:
            return []
        return self.metadata.take(wanted).to_pylist()

    def reconstruct_all(self) -> np.ndarray:
        """The stored vectors (exact for flat, HNSW-flat and the re-ranking store of ivfpq)."""
        if self.info.type == "ivfpq":
            store = _faiss().downcast_index(self._refine().refine_index)
            return store.reconstruct_n(0, self.ntotal)
        return self.index.reconstruct_n(0, self.ntotal)

    def add(self, vectors: np.ndarray, metadata: "pa.Table | None" = None, *, source: str | None = None) -> np.ndarray:
        """Append vectors (no rebuild); returns their ids. ``metadata`` rows must match in number."""
        import pyarrow as pa

        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2:
            raise DataError(f"{source or 'vectors'}: expected a 2-D matrix, got shape {tuple(v.shape)}")
        if v.shape[1] != self.dim:
            raise DataError(f"{source or 'vectors'}: dimension {v.shape[1]} does not match the index ({self.dim})")
        start = self.ntotal
        ids = np.arange(start, start + len(v), dtype=np.int64)
        meta = metadata if metadata is not None else pa.table({"path": pa.nulls(len(v), pa.string())})
        if len(meta) != len(v):
            raise DataError(f"{source or 'metadata'}: {len(meta)} rows for {len(v)} vectors")
        if "id" in meta.column_names:
            meta = meta.drop_columns(["id"])
        meta = meta.add_column(0, "id", pa.array(ids))
        self.index.add(v)
        self.metadata = concat_metadata([self.metadata, meta])
        self.info.ntotal = self.ntotal
        if source:
            self.info.embeddings.append(str(source))
        return ids

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write ``X.faiss``, ``X.index.parquet`` and ``X.index.json`` as one set: a kill at any moment
        leaves the previous set or the new one (see :func:`write_index_set`), never a mix."""
        target = Path(path or self.path or "")
        if not str(target) or target.suffix != ".faiss":
            raise ConfigError(f"--output: {target or '(none)'}: the index file name must end in .faiss")
        from kitaeru.index.index_set import write_index_set

        self.info.ntotal = self.ntotal
        write_index_set(target, self.index, self.metadata, self.info.as_dict())
        self.path = target
        return target


def build_index(
    vectors: np.ndarray,
    metadata: "pa.Table | None" = None,
    *,
    index_type: str = "auto",
    metric: str = "ip",
    params: Mapping[str, Any] | None = None,
    info: EmbeddingInfo | None = None,
    source: str | None = None,
    max_index_memory: int | str | None = None,
) -> VectorIndex:
    """Build a :class:`VectorIndex` over ``vectors`` (N, dim); ``params`` override the chosen ones.

    ``max_index_memory`` (bytes, or ``"4G"``): ``auto`` skips candidates estimated above it; an
    explicit type that does not fit is an error."""
    import pyarrow as pa

    if index_type not in INDEX_TYPES:
        raise ConfigError(f"--type: unknown index type '{index_type}' (choose from {', '.join(INDEX_TYPES)})")
    if metric not in METRICS:
        raise ConfigError(f"--metric: unknown metric '{metric}' (choose from {', '.join(METRICS)})")
    budget = parse_memory(max_index_memory)
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] == 0:
        raise DataError(f"{source or 'vectors'}: expected a non-empty 2-D matrix, got shape {tuple(v.shape)}")
    n, dim = v.shape
    if metadata is None:
        metadata = pa.table({"id": pa.array(np.arange(n, dtype=np.int64)), "path": pa.nulls(n, pa.string())})
    if len(metadata) != n:
        raise DataError(f"{source or 'metadata'}: {len(metadata)} metadata rows for {n} vectors")
    emb = info or EmbeddingInfo()
    base = dict(type=index_type, metric=metric, dim=dim, model=emb.model, pretrained=emb.pretrained, pool=emb.pool,
                image_size=emb.image_size, resize=emb.resize, normalized=emb.normalized, kind=emb.kind,
                embeddings=[str(source)] if source else [])
    if index_type == "auto":
        from kitaeru.index.auto_tune import tune

        chosen, resolved, index, report = tune(v, metric, params, max_bytes=budget)
        resolved = {**resolved, "auto": report}
        return VectorIndex(index, metadata, IndexInfo(**{**base, "type": chosen}, params=resolved))
    resolved = resolve_params(index_type, n, dim, params)
    check_memory(index_type, n, dim, resolved, budget)
    index = make_faiss_index(v, index_type, metric, resolved)
    return VectorIndex(index, metadata, IndexInfo(**base, params=resolved))


# ---- loading ---------------------------------------------------------------------------------
def load_index(path: str | os.PathLike) -> VectorIndex:
    """Load ``X.faiss`` with ``X.index.parquet`` and ``X.index.json`` (local path or fsspec URL)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kitaeru.core.storage import copy_file, is_remote

    text = str(path)
    if not text.endswith(".faiss"):
        raise ConfigError(f"--index: {text}: expected a .faiss file")
    if is_remote(text):
        # Faiss reads only local files: fetch the three files into a temporary folder first
        import tempfile

        with tempfile.TemporaryDirectory(prefix="kitaeru-index-") as tmp:
            local = Path(tmp) / text.rstrip("/").rsplit("/", 1)[-1]
            for remote_part, local_part in zip((text, *_remote_sidecars(text)), sidecar_paths(local)):
                copy_file(remote_part, local_part)
            loaded = load_index(local)
        loaded.path = None
        return loaded
    faiss_path, meta_path, json_path = sidecar_paths(text)
    from kitaeru.index.index_set import finish_pending_save

    finish_pending_save(faiss_path)  # a save stopped between its renames: its new set is complete
    for p in (faiss_path, meta_path, json_path):
        if not p.is_file():
            raise DataError(f"{p}: not found (an index is X.faiss with X.index.parquet and X.index.json beside it)")
    try:
        info = IndexInfo.from_dict(json.loads(json_path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise DataError(f"{json_path}: not a kitaeru index description ({exc})") from exc
    try:
        index = _faiss().read_index(str(faiss_path))
    except RuntimeError as exc:
        raise DataError(f"{faiss_path}: not a readable Faiss index ({str(exc).splitlines()[0][:200]})") from exc
    try:
        metadata = pq.read_table(meta_path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{meta_path}: cannot read as Parquet ({str(exc).splitlines()[0]})") from exc
    if index.d != info.dim:
        raise DataError(f"{json_path}: says dimension {info.dim} but {faiss_path} holds {index.d}-d vectors")
    return VectorIndex(index, metadata, info, path=faiss_path)


def _remote_sidecars(url: str) -> tuple[str, str]:
    stem = url[: -len(".faiss")] if url.endswith(".faiss") else url
    return f"{stem}.index.parquet", f"{stem}.index.json"

