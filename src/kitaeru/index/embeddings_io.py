"""The embeddings file format written by ``kitaeru embed`` and read by ``index``, ``map`` and ``serve``.

Three layouts hold the same thing, a float32 matrix with one metadata row per vector:

* ``X.parquet`` — one row per item: ``path`` (string), ``width``/``height`` (int32, the source image
  size after EXIF rotation; null for texts), ``embedding`` (``fixed_size_list<float32>[dim]``),
  ``model``, ``pretrained``, ``pool`` (strings), plus ``text`` for text embeddings.
* a folder of numbered shards ``X/part-00000.parquet``, ``part-00001.parquet``, ... with the same
  columns (read in name order as one table).
* ``X.npy`` (``(N, dim)`` float32) with ``X.meta.parquet`` beside it holding the same columns minus
  ``embedding``. A bare ``.npy`` matrix with no metadata file is accepted too: row numbers are ids.

Every Parquet file carries the run's settings as JSON under the schema-metadata key ``kitaeru``
(:class:`EmbeddingInfo`: model, pretrained, pool, image_size, resize, normalized, dim, kind), so a
reader knows which encoder produced the vectors without guessing.

Reading: :func:`read_embeddings` → :class:`Embeddings` (``vectors``, ``metadata`` as a
``pyarrow.Table`` with an ``id`` column = row number and always a ``path`` column, ``info``).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from kitaeru.core.errors import DataError
from kitaeru.core.storage import filesystem, is_remote, open_input

if TYPE_CHECKING:  # pyarrow is light enough, but keep module import cheap for the CLI
    import pyarrow as pa

FORMAT_VERSION = "kitaeru-embeddings/1"
SCHEMA_METADATA_KEY = b"kitaeru"
EMBEDDING_COLUMN = "embedding"
SHARD_PATTERN = "part-{:05d}.parquet"


@dataclass
class EmbeddingInfo:
    """How a set of vectors was made; stored in the Parquet schema metadata and in index JSON."""

    model: str | None = None
    pretrained: str | None = None
    pool: str | None = None
    image_size: int | None = None
    resize: str | None = None
    normalized: bool | None = None
    dim: int | None = None
    kind: str | None = None  # "image" | "text" | None (unknown, e.g. a bare .npy)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "EmbeddingInfo":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def same_encoder(self, other: "EmbeddingInfo") -> bool:
        """True when both describe vectors from the same encoder settings (unknown fields match)."""
        for key in ("model", "pretrained", "pool", "image_size", "resize", "normalized", "dim"):
            a, b = getattr(self, key), getattr(other, key)
            if a is not None and b is not None and a != b:
                return False
        return True


@dataclass
class Embeddings:
    """Vectors plus one metadata row per vector (``id`` = row number, ``path`` and the rest)."""

    vectors: np.ndarray  # (N, dim) float32, C-contiguous
    metadata: "pa.Table"
    info: EmbeddingInfo = field(default_factory=EmbeddingInfo)
    source: str = ""

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


# ---- writing ---------------------------------------------------------------------------------
def embedding_schema(dim: int, info: EmbeddingInfo, *, with_embedding: bool = True, with_text: bool = False) -> "pa.Schema":
    """The Arrow schema of an embeddings table (``with_embedding=False`` for ``.meta.parquet``)."""
    import pyarrow as pa

    cols = [pa.field("path", pa.string()), pa.field("width", pa.int32()), pa.field("height", pa.int32())]
    if with_text:
        cols.append(pa.field("text", pa.string()))
    if with_embedding:
        cols.append(pa.field(EMBEDDING_COLUMN, pa.list_(pa.float32(), dim)))
    cols += [pa.field("model", pa.string()), pa.field("pretrained", pa.string()), pa.field("pool", pa.string())]
    meta = {SCHEMA_METADATA_KEY: json.dumps({"format": FORMAT_VERSION, **info.as_dict()}).encode()}
    return pa.schema(cols, metadata=meta)


def make_table(
    vectors: np.ndarray,
    rows: list[dict[str, Any]],
    info: EmbeddingInfo,
    *,
    with_embedding: bool = True,
) -> "pa.Table":
    """A table in the embeddings schema from ``vectors`` (N, dim) and per-row dicts (path, width, ...)."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(rows):
        raise ValueError(f"vectors {vectors.shape} do not match {len(rows)} rows")
    with_text = any("text" in r for r in rows)
    schema = embedding_schema(vectors.shape[1], info, with_embedding=with_embedding, with_text=with_text)
    columns: dict[str, Any] = {}
    for f in schema:
        if f.name == EMBEDDING_COLUMN:
            flat = pa.array(vectors.reshape(-1), type=pa.float32())
            columns[f.name] = pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])
        elif f.name in ("model", "pretrained", "pool"):
            columns[f.name] = pa.array([getattr(info, f.name)] * len(rows), type=f.type)
        else:
            columns[f.name] = pa.array([r.get(f.name) for r in rows], type=f.type)
    return pa.table(columns, schema=schema)


def write_parquet(table: "pa.Table", target: str | os.PathLike) -> Path:
    """Write ``table`` atomically (a crash leaves no half-written file)."""
    import pyarrow.parquet as pq

    from kitaeru.core.storage import atomic_path

    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return Path(target)


def meta_path_for_npy(npy_path: str | os.PathLike) -> str:
    """``X.npy`` → ``X.meta.parquet`` (the metadata table written beside an ``.npy`` output)."""
    text = str(npy_path)
    return (text[:-4] if text.endswith(".npy") else text) + ".meta.parquet"


# ---- reading ---------------------------------------------------------------------------------
def info_from_schema(schema: "pa.Schema") -> EmbeddingInfo:
    raw = (schema.metadata or {}).get(SCHEMA_METADATA_KEY)
    if not raw:
        return EmbeddingInfo()
    try:
        return EmbeddingInfo.from_dict(json.loads(raw))
    except (ValueError, TypeError):
        return EmbeddingInfo()


def parquet_files(path: str | os.PathLike) -> list[str]:
    """The Parquet files making up ``path``: itself, or the sorted visible ``*.parquet`` in a folder."""
    text = str(path)
    if is_remote(text):
        fs, p = filesystem(text)
        if not fs.exists(p):
            raise DataError(f"{text}: not found")
        if fs.isdir(p):
            found = [f for f in fs.ls(p, detail=False) if f.endswith(".parquet") and not _hidden(f)]
            return sorted(fs.unstrip_protocol(f) for f in found)
        return [text]
    local = Path(text[len("file://"):] if text.startswith("file://") else text)
    if not local.exists():
        raise DataError(f"{local}: not found")
    if local.is_dir():
        return sorted(str(f) for f in local.glob("*.parquet") if f.is_file() and not _hidden(f.name))
    return [str(local)]


def _hidden(name: str) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return base.startswith((".", "_"))


def read_parquet_table(path: str, columns: list[str] | None = None) -> "pa.Table":
    """One Parquet file (local or URL) as a table, with a one-line error when it is not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if is_remote(path):
            fs, p = filesystem(path)
            with fs.open(p, "rb") as fh:
                return pq.read_table(io.BytesIO(fh.read()), columns=columns)
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        reason = str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot read as Parquet ({reason})") from exc


def vectors_from_column(column: "pa.ChunkedArray", source: str) -> np.ndarray:
    """An ``embedding`` column (fixed-size or equal-length lists of floats) as an (N, dim) float32 matrix."""
    import pyarrow as pa

    n = len(column)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    combined = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if combined.null_count:
        raise DataError(f"{source}: column '{EMBEDDING_COLUMN}' has {combined.null_count} empty value(s)")
    if pa.types.is_fixed_size_list(combined.type):
        dim = combined.type.list_size
    elif pa.types.is_list(combined.type) or pa.types.is_large_list(combined.type):
        lengths = np.asarray(combined.value_lengths())
        if lengths.min() != lengths.max():
            raise DataError(f"{source}: embeddings have different lengths ({lengths.min()}..{lengths.max()})")
        dim = int(lengths[0])
    else:
        raise DataError(f"{source}: column '{EMBEDDING_COLUMN}' is {combined.type}, expected a list of floats")
    values = combined.flatten()
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise DataError(f"{source}: column '{EMBEDDING_COLUMN}' holds {values.type}, expected floats")
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return np.ascontiguousarray(flat.reshape(n, dim))


def _with_ids(meta: "pa.Table", n: int, start: int = 0) -> "pa.Table":
    import pyarrow as pa

    if "path" not in meta.column_names:
        meta = meta.append_column("path", pa.nulls(n, type=pa.string()))
    if "id" in meta.column_names:
        meta = meta.drop_columns(["id"])
    return meta.add_column(0, "id", pa.array(np.arange(start, start + n, dtype=np.int64)))


def read_embeddings(path: str | os.PathLike, *, ids_start: int = 0) -> Embeddings:
    """Read an ``embed`` output (Parquet file, folder of shards, ``.npy`` + ``.meta.parquet``) or a
    bare 2-D ``.npy`` float matrix. Ids are row numbers starting at ``ids_start``."""
    text = str(path)
    if text.endswith(".npy"):
        return _read_npy(text, ids_start)
    files = parquet_files(text)
    if not files:
        raise DataError(f"{text}: no .parquet files in this folder")
    if not text.endswith(".parquet") and len(files) == 1 and files[0] == text:
        raise DataError(f"{text}: expected a .parquet file, a folder of .parquet shards, or a .npy matrix")
    return _read_parquet_files(files, text, ids_start)


def _read_parquet_files(files: list[str], source: str, ids_start: int) -> Embeddings:
    import pyarrow as pa

    tables, info = [], None
    for f in files:
        table = read_parquet_table(f)
        if EMBEDDING_COLUMN not in table.column_names:
            raise DataError(f"{f}: no '{EMBEDDING_COLUMN}' column (columns: {', '.join(table.column_names)})")
        info = info or info_from_schema(table.schema)
        tables.append(table.replace_schema_metadata(None))
    try:
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"{source}: shards do not share one schema ({str(exc).splitlines()[0]})") from exc
    vectors = vectors_from_column(table.column(EMBEDDING_COLUMN), source)
    if len(table) == 0:
        raise DataError(f"{source}: holds no embeddings")
    meta = _with_ids(table.drop_columns([EMBEDDING_COLUMN]), len(table), ids_start)
    info = info or EmbeddingInfo()
    if info.model is None and "model" in meta.column_names and len(meta):
        info.model, info.pretrained, info.pool = (meta.column(c)[0].as_py() if c in meta.column_names else None
                                                  for c in ("model", "pretrained", "pool"))
    info.dim = vectors.shape[1]
    return Embeddings(vectors=vectors, metadata=meta, info=info, source=source)


def load_matrix(path: str | os.PathLike) -> np.ndarray:
    """A 2-D numeric ``.npy`` matrix (local or URL) as float32, with one-line errors otherwise."""
    text = str(path)
    with open_input(text, "rb") as fh:
        raw = fh.read()
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{text}: not a valid .npy file ({str(exc).splitlines()[0]})") from exc
    if arr.ndim != 2:
        raise DataError(f"{text}: expected a 2-D matrix (rows × dim), got shape {tuple(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{text}: expected numbers, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{text}: empty matrix {tuple(arr.shape)}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise DataError(f"{text}: holds NaN or infinite values")
    return arr


def _read_npy(path: str, ids_start: int) -> Embeddings:
    import pyarrow as pa

    vectors = load_matrix(path)
    meta_file = meta_path_for_npy(path)
    if _exists(meta_file):
        table = read_parquet_table(meta_file)
        if len(table) != len(vectors):
            raise DataError(f"{meta_file}: {len(table)} rows but {path} has {len(vectors)} vectors")
        info = info_from_schema(table.schema)
        meta = table.replace_schema_metadata(None)
        if EMBEDDING_COLUMN in meta.column_names:
            meta = meta.drop_columns([EMBEDDING_COLUMN])
    else:
        info, meta = EmbeddingInfo(), pa.table({"path": pa.nulls(len(vectors), pa.string())})
    info.dim = vectors.shape[1]
    return Embeddings(vectors=vectors, metadata=_with_ids(meta, len(vectors), ids_start), info=info, source=path)


def _exists(path: str) -> bool:
    from kitaeru.core.storage import exists

    return exists(path)


def concat_metadata(tables: Iterable["pa.Table"]) -> "pa.Table":
    """Stack metadata tables whose columns may differ (missing columns become nulls)."""
    import pyarrow as pa

    tables = [t.replace_schema_metadata(None) for t in tables]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DataError(f"metadata columns cannot be combined ({str(exc).splitlines()[0]})") from exc


def summary_path(out: str | os.PathLike) -> Path:
    """Where ``kitaeru embed`` writes its run summary for output ``out``: ``X.summary.json`` beside
    ``X.parquet``/``X.npy``, ``DIR/_summary.json`` inside a folder of shards."""
    text = str(out)
    for suffix in (".parquet", ".npy"):
        if text.endswith(suffix):
            return Path(text[: -len(suffix)] + ".summary.json")
    return Path(text) / "_summary.json"
