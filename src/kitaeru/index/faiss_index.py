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
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from kitaeru.core.errors import ConfigError, DataError
from kitaeru.index.embeddings_io import EmbeddingInfo, concat_metadata

if TYPE_CHECKING:
    import pyarrow as pa

INDEX_TYPES = ("flat", "ivfpq", "hnsw", "auto")
METRICS = ("ip", "l2")
INDEX_FORMAT = "kitaeru-index/1"
AUTO_FLAT_MAX_N = 10_000
AUTO_MIN_RECALL = 0.95
TUNABLE_PARAMS = {
    "flat": (),
    "ivfpq": ("nlist", "pq_m", "pq_nbits", "nprobe", "k_factor"),
    "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
}
SEARCH_TIME_PARAMS = ("nprobe", "k_factor", "ef_search")


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


def sidecar_paths(index_path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``X.faiss`` → (``X.faiss``, ``X.index.parquet``, ``X.index.json``).

    The ``.index.`` infix keeps them apart from an embeddings output of the same name
    (``X.npy`` + ``X.meta.parquet``, ``X.summary.json``)."""
    p = Path(index_path)
    stem = p.with_suffix("") if p.suffix == ".faiss" else p
    return p, Path(f"{stem}.index.parquet"), Path(f"{stem}.index.json")


def _faiss():
    from kitaeru.core.errors import require

    return require("faiss", "all", "vector indexes")


def _metric_code(metric: str) -> int:
    faiss = _faiss()
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


# ---- parameters ----------------------------------------------------------------------------
def _largest_divisor_at_most(n: int, limit: int, *, even: bool = False) -> int:
    """The largest divisor of ``n`` not above ``limit`` (an even one when asked and one exists)."""
    divisors = [m for m in range(max(1, min(n, limit)), 0, -1) if n % m == 0]
    if even and any(m % 2 == 0 for m in divisors):
        return next(m for m in divisors if m % 2 == 0)
    return divisors[0] if divisors else 1


def default_params(index_type: str, n: int, dim: int) -> dict[str, Any]:
    """Parameters for ``index_type`` chosen from the number of vectors ``n`` and ``dim``.

    * ivfpq: ``nlist ≈ 4·√n`` (at least 39 training points per list), ``pq_m`` = sub-quantisers of
      about 8 dimensions each (an even divisor of ``dim``), ``pq_nbits`` 4 — Faiss's SIMD
      "fast-scan" PQ, which trains in seconds and scans several times faster than 8-bit codes
      (fewer bits for tiny ``n``; 8 can be asked for) — ``nprobe ≈ nlist/16`` (≥ 8), and exact
      re-ranking of ``k_factor=16`` × k candidates.
    * hnsw: ``hnsw_m`` (HNSW's M) 32, ``ef_construction`` 80 (40 above 2M vectors), ``ef_search`` 96.
    """
    if index_type == "flat":
        return {}
    if index_type == "ivfpq":
        nlist = int(round(4 * math.sqrt(n)))
        nlist = max(1, min(nlist, n // 39 if n >= 39 else 1, 65536))
        nbits = 4 if n >= 16 * 4 else max(1, int(math.log2(max(2, n // 4))))
        m = _largest_divisor_at_most(dim, max(1, dim // 8), even=True)
        nprobe = min(nlist, max(8, nlist // 16))
        return {"nlist": nlist, "pq_m": m, "pq_nbits": nbits, "nprobe": nprobe, "k_factor": 16}
    if index_type == "hnsw":
        return {"hnsw_m": 32, "ef_construction": 80 if n <= 2_000_000 else 40, "ef_search": 96}
    raise ConfigError(f"--type: unknown index type '{index_type}' (choose from {', '.join(INDEX_TYPES)})")


def resolve_params(index_type: str, n: int, dim: int, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults from :func:`default_params` with ``overrides`` on top; unknown/invalid names are errors."""
    params = default_params(index_type, n, dim)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    allowed = TUNABLE_PARAMS.get(index_type, ())
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        listed = ", ".join(allowed) or "none"
        raise ConfigError(f"index parameter(s) {', '.join(unknown)} do not apply to --type {index_type} (it takes: {listed})")
    for key, value in given.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"index parameter {key}: expected a positive integer, got {value!r}")
    params.update(given)
    if index_type == "ivfpq":
        if dim % params["pq_m"]:
            raise ConfigError(f"index parameter pq_m={params['pq_m']}: must divide the dimension {dim}")
        if params["pq_nbits"] > 16:
            raise ConfigError(f"index parameter pq_nbits={params['pq_nbits']}: at most 16")
        if params["nlist"] > n:
            raise ConfigError(f"index parameter nlist={params['nlist']}: more lists than the {n} vectors to train on")
        if 2 ** params["pq_nbits"] > n:
            raise ConfigError(f"index parameter pq_nbits={params['pq_nbits']}: needs at least {2 ** params['pq_nbits']} vectors to train, got {n}")
        params["nprobe"] = min(params["nprobe"], params["nlist"])
    return params


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
            raise ConfigError(f"--index-out: {target or '(none)'}: the index file name must end in .faiss")
        from kitaeru.index.index_set import write_index_set

        self.info.ntotal = self.ntotal
        write_index_set(target, self.index, self.metadata, self.info.as_dict())
        self.path = target
        return target


# ---- building --------------------------------------------------------------------------------
def _train_sample(vectors: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    if len(vectors) <= limit:
        return vectors
    rng = np.random.default_rng(seed)
    return vectors[np.sort(rng.choice(len(vectors), limit, replace=False))]


def new_ivfpq(dim: int, metric: str, params: Mapping[str, Any], quantizer: Any = None):
    """An untrained IVF-PQ index re-ranked exactly (``IndexRefineFlat``). A ``quantizer`` already
    trained with ``nlist`` centroids is reused as is (its k-means is not run again)."""
    faiss = _faiss()
    if quantizer is None:
        quantizer = flat_quantizer(dim, metric)
    nlist, m, nbits = int(params["nlist"]), int(params["pq_m"]), int(params["pq_nbits"])
    if nbits == 4 and m % 2 == 0:  # 4-bit codes in pairs: the SIMD fast-scan layout
        base = faiss.IndexIVFPQFastScan(quantizer, dim, nlist, m, nbits, _metric_code(metric))
    else:
        base = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, _metric_code(metric))
    # Small lists/codebooks are chosen on purpose for small n: no "too few points" warnings.
    base.cp.min_points_per_centroid = base.pq.cp.min_points_per_centroid = 1
    # k-means on 64 points per centroid and 10 iterations: ~10x cheaper training than Faiss's
    # defaults; what coarser centroids/codes lose, the exact re-ranking below wins back.
    base.cp.max_points_per_centroid = base.pq.cp.max_points_per_centroid = 64
    base.cp.niter = base.pq.cp.niter = 10
    return faiss.IndexRefineFlat(base)  # the Python wrappers keep base/quantizer alive


def flat_quantizer(dim: int, metric: str) -> Any:
    """An empty coarse quantizer; hold the Python object while indexes built on it are in use."""
    faiss = _faiss()
    return faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)


def make_faiss_index(vectors: np.ndarray, index_type: str, metric: str, params: Mapping[str, Any],
                     quantizer: Any = None):
    """A trained, filled Faiss index of ``index_type`` over ``vectors`` (search knobs not yet set)."""
    faiss = _faiss()
    n, dim = vectors.shape
    code = _metric_code(metric)
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    elif index_type == "ivfpq":
        index = new_ivfpq(dim, metric, params, quantizer)
        limit = max(int(params["nlist"]), 2 ** int(params["pq_nbits"])) * 64
        index.train(_train_sample(vectors, limit))
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, int(params["hnsw_m"]), code)
        index.hnsw.efConstruction = int(params["ef_construction"])
    else:
        raise ConfigError(f"--type: unknown index type '{index_type}' (choose from {', '.join(INDEX_TYPES)})")
    index.add(vectors)
    return index


# ---- memory ----------------------------------------------------------------------------------
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024 ** 2, "MB": 1024 ** 2, "MIB": 1024 ** 2,
          "G": 1024 ** 3, "GB": 1024 ** 3, "GIB": 1024 ** 3, "T": 1024 ** 4, "TB": 1024 ** 4, "TIB": 1024 ** 4}


def parse_memory(text: str | int | None, what: str = "--max-index-memory") -> int | None:
    """``"4G"`` / ``"512M"`` / ``"1.5GB"`` / ``"100000"`` → bytes (powers of 1024, as autofaiss reads them)."""
    import re

    if text is None or text == "":
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        if not match or match.group(2).upper() not in _UNITS:
            raise ConfigError(f"{what}: '{text}' is not a size (write e.g. 4G, 512M, 1.5GB)")
        value, unit = float(match.group(1)), match.group(2).upper()
    size = int(value * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"{what}: '{text}' must be more than 0 bytes")
    return size


def format_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"  # pragma: no cover


def estimate_index_bytes(index_type: str, n: int, dim: int, params: Mapping[str, Any]) -> int:
    """About how many bytes an index of ``index_type`` over ``n`` vectors holds in memory (and on disk).

    flat: the float32 vectors. ivfpq: the PQ codes and their ids in the lists, the coarse centroids,
    and the float32 vectors kept for exact re-ranking. hnsw: the float32 vectors plus the graph
    (2·M neighbour ids on level 0, M on the ~1/M of nodes that reach the upper levels)."""
    vectors = n * dim * 4
    if index_type == "flat":
        return vectors
    if index_type == "ivfpq":
        code = math.ceil(int(params["pq_m"]) * int(params["pq_nbits"]) / 8)
        return vectors + n * (code + 8) + int(params["nlist"]) * dim * 4
    if index_type == "hnsw":
        m = int(params["hnsw_m"])
        links = 2 * m + m / max(m - 1, 1)
        return vectors + int(n * (links * 4 + 16))
    raise ConfigError(f"--type: unknown index type '{index_type}' (choose from {', '.join(INDEX_TYPES)})")


def check_memory(index_type: str, n: int, dim: int, params: Mapping[str, Any], max_bytes: int | None) -> None:
    """A chosen type must fit the budget: a one-line error with both sizes otherwise."""
    if max_bytes is None:
        return
    need = estimate_index_bytes(index_type, n, dim, params)
    if need > max_bytes:
        raise ConfigError(f"--max-index-memory: a {index_type} index over {n} x {dim} vectors needs about "
                          f"{format_bytes(need)}, more than the {format_bytes(max_bytes)} allowed "
                          "(try --type auto, or a smaller pq_m)")


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


def ids_table(n: int) -> "pa.Table":
    import pyarrow as pa

    return pa.table({"id": pa.array(np.arange(n, dtype=np.int64))})


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

