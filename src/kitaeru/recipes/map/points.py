"""The points of a map: vectors plus what to show for each (label, image, columns to colour by).

Two sources:

* an ``embed`` output (``.parquet`` file, folder of shards, or ``.npy`` + ``.meta.parquet``): one
  point per row, labelled by its ``path`` (or ``text``);
* a multimodal training output folder: one point per scene of its ``vector_db.json``, labelled by
  scene id and description, with ``location`` and the scene metadata as columns.

Large inputs are sampled while reading: only the row counts are read first, then the chosen rows
are taken batch by batch (``.npy`` files are memory-mapped), so mapping 200k points of a 10M-row
embedding set never holds the 10M vectors in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kitaeru.core.errors import DataError


@dataclass
class MapPoints:
    """Vectors and per-point display data, all in the same order."""

    vectors: np.ndarray  # (n, dim) float32
    ids: list[Any]  # row id (embed) or scene_id (multimodal)
    labels: list[str]  # the main hover line: path, text or "scene_id: description"
    images: list[str | None]  # image to thumbnail (local path or URL), if any
    columns: dict[str, list[Any]] = field(default_factory=dict)  # metadata to colour by / show
    total: int = 0  # points in the input before sampling
    source: str = ""
    coords: np.ndarray | None = None  # (n, 2) UMAP coordinates the input already holds (a multimodal run's)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


def sample_rows(total: int, wanted: int | None, random_state: int | None) -> np.ndarray | None:
    """Sorted row numbers of a random subset of ``wanted`` rows, or ``None`` for all rows."""
    if wanted is None or wanted >= total:
        return None
    rng = np.random.default_rng(None if random_state is None or random_state < 0 else random_state)
    return np.sort(rng.choice(total, size=wanted, replace=False))


# ---- embed outputs ---------------------------------------------------------------------------------
def count_embedding_rows(path: str) -> int:
    """Rows of an embed output without reading its vectors."""
    if path.endswith(".npy"):
        return int(_npy_shape(path)[0])
    from kitaeru.index.embeddings_io import parquet_files

    files = parquet_files(path)
    if not files:
        raise DataError(f"{path}: no .parquet files in this folder")
    return sum(_parquet_file(f).metadata.num_rows for f in files)


def load_embedding_points(path: str, *, wanted: int | None, random_state: int | None) -> MapPoints:
    """The points of an embed output, a random ``wanted`` of them when it holds more."""
    total = count_embedding_rows(path)
    if total == 0:
        raise DataError(f"{path}: holds no embeddings")
    rows = sample_rows(total, wanted, random_state)
    if path.endswith(".npy"):
        vectors, meta = _npy_rows(path, rows)
    else:
        vectors, meta = _parquet_rows(path, rows)
    ids = list(range(total)) if rows is None else rows.tolist()
    return _points_from_table(vectors, meta, ids, total, path)


def _points_from_table(vectors: np.ndarray, meta: Any, ids: list[int], total: int, source: str) -> MapPoints:
    columns = {name: meta.column(name).to_pylist() for name in meta.column_names
               if name not in ("id", "embedding", "model", "pretrained", "pool")}
    paths = columns.get("path") or [None] * len(ids)
    texts = columns.get("text") or [None] * len(ids)
    labels = [str(t) if t else (str(p) if p else f"#{i}") for i, p, t in zip(ids, paths, texts)]
    images = [p if p and not t else None for p, t in zip(paths, texts)]
    return MapPoints(vectors=vectors, ids=ids, labels=labels, images=images, columns=columns, total=total, source=source)


def _parquet_file(path: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kitaeru.core.storage import filesystem, is_remote

    try:
        if is_remote(path):
            fs, p = filesystem(path)
            return pq.ParquetFile(fs.open(p, "rb"))
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot read as Parquet ({str(exc).splitlines()[0]})") from exc


def _parquet_rows(path: str, rows: np.ndarray | None):
    """The vectors and metadata of ``rows`` (all when ``None``), streamed batch by batch."""
    import pyarrow as pa

    from kitaeru.index.embeddings_io import EMBEDDING_COLUMN, parquet_files, vectors_from_column

    vector_parts, meta_parts = [], []
    offset = 0
    for f in parquet_files(path):
        pf = _parquet_file(f)
        if EMBEDDING_COLUMN not in pf.schema_arrow.names:
            raise DataError(f"{f}: no '{EMBEDDING_COLUMN}' column (columns: {', '.join(pf.schema_arrow.names)})")
        for batch in pf.iter_batches(batch_size=16_384):
            n = batch.num_rows
            if rows is not None:
                lo, hi = np.searchsorted(rows, [offset, offset + n])
                if lo == hi:
                    offset += n
                    continue
                batch = batch.take(pa.array(rows[lo:hi] - offset))
            offset += n
            table = pa.Table.from_batches([batch])
            vector_parts.append(vectors_from_column(table.column(EMBEDDING_COLUMN), f))
            meta_parts.append(table.drop_columns([EMBEDDING_COLUMN]).replace_schema_metadata(None))
    if not vector_parts:
        raise DataError(f"{path}: holds no embeddings")
    dims = {v.shape[1] for v in vector_parts if v.size}
    if len(dims) > 1:
        raise DataError(f"{path}: shards hold vectors of different sizes ({sorted(dims)})")
    try:
        meta = pa.concat_tables(meta_parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{path}: shards do not share one schema ({str(exc).splitlines()[0]})") from exc
    return np.concatenate(vector_parts), meta


def _npy_shape(path: str) -> tuple[int, ...]:
    from kitaeru.core.storage import is_remote

    if is_remote(path):
        from kitaeru.index.embeddings_io import load_matrix

        return load_matrix(path).shape
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).shape
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a valid .npy file ({str(exc).splitlines()[0]})") from exc


def _npy_rows(path: str, rows: np.ndarray | None):
    import pyarrow as pa

    from kitaeru.core.storage import exists, is_remote
    from kitaeru.index.embeddings_io import load_matrix, meta_path_for_npy, read_parquet_table

    if is_remote(path) or rows is None:
        matrix = load_matrix(path)  # validates shape, dtype and finiteness
        vectors = matrix if rows is None else matrix[rows]
    else:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
        if mapped.ndim != 2 or not np.issubdtype(mapped.dtype, np.number):
            raise DataError(f"{path}: expected a 2-D numeric matrix, got shape {tuple(mapped.shape)} of {mapped.dtype}")
        vectors = np.ascontiguousarray(mapped[rows], dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise DataError(f"{path}: holds NaN or infinite values")
    meta_file = meta_path_for_npy(path)
    if exists(meta_file):
        meta = read_parquet_table(meta_file).replace_schema_metadata(None)
        if len(meta) != (len(vectors) if rows is None else _npy_shape(path)[0]):
            raise DataError(f"{meta_file}: {len(meta)} rows but {path} has {_npy_shape(path)[0]} vectors")
        if rows is not None:
            meta = meta.take(pa.array(rows))
    else:
        meta = pa.table({"path": pa.nulls(len(vectors), pa.string())})
    return vectors, meta


def flatten_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """Scalar fields of a scene record, with its ``metadata`` dict merged in (for --color-by)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "metadata" and isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, (str, int, float, bool)) or v is None:
                    out.setdefault(k, v)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
    return out


def check_dim(vectors: np.ndarray, source: str | os.PathLike) -> np.ndarray:
    """Refuse empty or NaN-holding matrices with a one-line error."""
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise DataError(f"{source}: no vectors to map (shape {tuple(vectors.shape)})")
    if not np.isfinite(vectors).all():
        raise DataError(f"{source}: vectors hold NaN or infinite values")
    return vectors
