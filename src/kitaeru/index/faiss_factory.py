"""The Faiss side of an index: types, metrics, parameters, memory estimates and the construction
of a raw Faiss index for a type and its parameters.

Shared by :mod:`.faiss_index` (the :class:`~kitaeru.index.faiss_index.VectorIndex` with its
metadata), :mod:`.auto_tune` (which builds candidates) and :mod:`.index_set` (which writes them), so
none of those needs another: the index modules import in one direction.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from kitaeru.core.errors import ConfigError

INDEX_TYPES = ("flat", "ivfpq", "hnsw", "auto")
METRICS = ("ip", "l2")
AUTO_FLAT_MAX_N = 10_000
AUTO_MIN_RECALL = 0.95
TUNABLE_PARAMS = {
    "flat": (),
    "ivfpq": ("nlist", "pq_m", "pq_nbits", "nprobe", "k_factor"),
    "hnsw": ("hnsw_m", "ef_construction", "ef_search"),
}
SEARCH_TIME_PARAMS = ("nprobe", "k_factor", "ef_search")


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
