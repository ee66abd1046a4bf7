"""The output side of ``kitaeru embed``: numbered shards as the job runs, resume, the final layout.

Vectors are buffered up to ``shard_size`` rows, then written as ``part-NNNNN.parquet`` (atomically)
into a work folder; a killed job loses at most one unfinished shard, an interrupted one
(Ctrl-C, an exception) flushes its buffer first and loses nothing. The work folder is

* ``--output DIR`` (no suffix): ``DIR`` itself — the shards are the output;
* ``--output X.parquet`` / ``--output X.npy``: ``X.parquet.parts/`` / ``X.npy.parts/``, merged into the
  final file(s) at the end by streaming row groups (memory stays bounded), then removed.

``--resume`` reads which paths are already in the final output and in the work folder and skips
them; the settings of the earlier run (model, weights, pool, size, normalisation) must match.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kitaeru.core.console import info as say
from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.storage import atomic_path
from kitaeru.index.embeddings_io import (
    EMBEDDING_COLUMN, SHARD_PATTERN, EmbeddingInfo, embedding_schema, info_from_schema, make_table, meta_path_for_npy,
    vectors_from_column, write_parquet,
)
from kitaeru.index.embeddings_io import summary_path as embeddings_summary_path

_SHARD_RE = re.compile(r"^part-(\d+)\.parquet$")


def output_kind(out: str) -> str:
    """``parquet`` (one file), ``npy`` (matrix + metadata) or ``folder`` (shards) from the name."""
    if out.endswith(".parquet"):
        return "parquet"
    if out.endswith(".npy"):
        return "npy"
    if Path(out).suffix and not Path(out).is_dir():
        raise ConfigError(f"--output: {out}: expected X.parquet, X.npy or a folder name (no suffix)")
    return "folder"


def summary_path(out: str) -> Path:
    """Where the run summary goes (the rule lives with the embeddings format, which readers share)."""
    output_kind(out)  # validates the output name
    return embeddings_summary_path(out)


class ShardedEmbeddingWriter:
    """Buffers rows, writes numbered shards, and assembles the final output (see module docstring)."""

    def __init__(self, out: str, info: EmbeddingInfo, *, resume: bool, shard_size: int, with_text: bool = False,
                 part_prefix: str = ""):
        # ``part_prefix``: one writer of several (a torchrun rank, a Spark task) into the same folder
        # names its parts ``part-<prefix>NNNNN.parquet`` and sees (resumes) only its own.
        self.part_prefix = part_prefix
        self._shard_re = re.compile(rf"^part-{re.escape(part_prefix)}(\d+)\.parquet$") if part_prefix else _SHARD_RE
        self.out = out
        self.kind = output_kind(out)
        self.target = Path(out)
        self.work_dir = self.target if self.kind == "folder" else Path(out + ".parts")
        self.info = info
        self.resume = resume
        self.shard_size = shard_size
        self.with_text = with_text
        self._vectors: list[np.ndarray] = []
        self._rows: list[dict[str, Any]] = []
        self._buffered = 0
        self._prepare()

    # ---- start -----------------------------------------------------------------------------
    def _shards(self) -> list[Path]:
        if not self.work_dir.is_dir():
            return []
        return sorted(p for p in self.work_dir.iterdir() if self._shard_re.match(p.name))

    def _existing_final(self) -> list[Path]:
        """Final files of an earlier finished run (file targets only)."""
        if self.kind == "parquet" and self.target.is_file():
            return [self.target]
        if self.kind == "npy" and self.target.is_file():
            meta = Path(meta_path_for_npy(self.target))
            if not meta.is_file():
                raise DataError(f"--resume: {self.target} has no {meta.name} beside it, so it cannot tell which files it holds")
            return [meta]
        return []

    def _prepare(self) -> None:
        if self.kind == "folder" and self.target.exists() and not self.target.is_dir():
            raise ConfigError(f"--output: {self.target} exists and is not a folder")
        if not self.resume:
            if self.kind == "folder" and self._shards():
                raise ConfigError(f"--output: {self.target} already holds embedding shards; pass --resume to continue "
                                  "that job, or choose another folder")
            if self.kind != "folder" and self.work_dir.exists():
                say(f"removing the shards of an earlier interrupted job in {self.work_dir} (use --resume to keep them)")
                shutil.rmtree(self.work_dir)
        else:
            for source in self._existing_final() + self._shards():
                self._check_same_settings(source)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(self._shard_re.match(p.name).group(1)) for p in self._shards()]
        self._next_shard = max(numbers) + 1 if numbers else 0

    def _check_same_settings(self, source: Path) -> None:
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(source)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: one line
            raise DataError(f"--resume: {source}: cannot read as Parquet ({str(exc).splitlines()[0]})") from exc
        before = info_from_schema(schema)
        now = self.info
        if not now.same_encoder(before) or (before.kind and before.kind != now.kind):
            raise ConfigError(
                f"--resume: {source} was made with model={before.model} pretrained={before.pretrained} pool={before.pool} "
                f"image_size={before.image_size} resize={before.resize} normalized={before.normalized}; this run uses "
                f"model={now.model} pretrained={now.pretrained} pool={now.pool} image_size={now.image_size} "
                f"resize={now.resize} normalized={now.normalized} (use the same settings or another --out)"
            )

    def done_paths(self) -> set[str]:
        """Paths already embedded (in the final output of an earlier run and in finished shards)."""
        import pyarrow.parquet as pq

        if not self.resume:
            return set()
        done: set[str] = set()
        for source in self._existing_final() + self._shards():
            done.update(p for p in pq.read_table(source, columns=["path"]).column("path").to_pylist() if p)
        return done

    # ---- during the run --------------------------------------------------------------------
    def add(self, vectors: np.ndarray, rows: list[dict[str, Any]]) -> None:
        self._vectors.append(np.asarray(vectors, dtype=np.float32))
        self._rows.extend(rows)
        self._buffered += len(rows)
        while self._buffered >= self.shard_size:
            self._write_shard(self.shard_size)

    def flush(self) -> None:
        """Write whatever is buffered as a (possibly short) shard."""
        if self._buffered:
            self._write_shard(self._buffered)

    def _write_shard(self, n: int) -> None:
        vectors = np.concatenate(self._vectors) if len(self._vectors) > 1 else self._vectors[0]
        rows, self._rows = self._rows[:n], self._rows[n:]
        rest = vectors[n:]
        self._vectors = [rest] if len(rest) else []
        self._buffered -= n
        table = make_table(vectors[:n], rows, self.info)
        name = SHARD_PATTERN.format(self._next_shard)
        write_parquet(table, self.work_dir / (name.replace("part-", f"part-{self.part_prefix}", 1)))
        self._next_shard += 1

    # ---- the end ---------------------------------------------------------------------------
    def finalize(self) -> list[Path]:
        """Flush, then assemble the final output; returns the files that make it up."""
        self.flush()
        sources = self._existing_final() + self._shards()
        if not sources:  # nothing could be embedded: leave no empty folder behind
            if self.work_dir.is_dir() and not any(self.work_dir.iterdir()):
                self.work_dir.rmdir()
            return []
        if self.kind == "folder":
            return self._shards()
        if self.kind == "parquet":
            files = [self._merge_parquet(sources)]
        else:
            files = self._merge_npy(sources)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return files

    def _schema(self) -> Any:
        return embedding_schema(self.info.dim, self.info, with_text=self.with_text)

    def _merge_parquet(self, sources: list[Path]) -> Path:
        import pyarrow.parquet as pq

        schema = self._schema()
        with atomic_path(self.target) as tmp:
            with pq.ParquetWriter(tmp, schema) as writer:
                for source in sources:
                    for batch in pq.ParquetFile(source).iter_batches(batch_size=8192):
                        writer.write_batch(batch.select(schema.names).cast(schema))
        return self.target

    def _merge_npy(self, sources: list[Path]) -> list[Path]:
        """``X.npy`` + ``X.meta.parquet`` from an earlier ``X.npy`` (when resuming) and the shards."""
        import pyarrow.parquet as pq

        meta_target = Path(meta_path_for_npy(self.target))
        earlier = self.target if self.target.is_file() and self.resume else None
        earlier_vectors = np.load(earlier, mmap_mode="r") if earlier is not None else None
        shards = [s for s in sources if s != meta_target]
        total = (len(earlier_vectors) if earlier_vectors is not None else 0)
        total += sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
        meta_schema = embedding_schema(self.info.dim, self.info, with_embedding=False, with_text=self.with_text)
        with atomic_path(self.target) as tmp_npy, atomic_path(meta_target) as tmp_meta:
            matrix = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.float32, shape=(total, self.info.dim))
            row = 0
            with pq.ParquetWriter(tmp_meta, meta_schema) as writer:
                if earlier_vectors is not None:
                    matrix[: len(earlier_vectors)] = earlier_vectors
                    row = len(earlier_vectors)
                    for batch in pq.ParquetFile(meta_target).iter_batches(batch_size=8192):
                        writer.write_batch(batch.select(meta_schema.names).cast(meta_schema))
                for shard in shards:
                    for batch in pq.ParquetFile(shard).iter_batches(batch_size=8192):
                        block = vectors_from_column(batch.column(EMBEDDING_COLUMN), str(shard))
                        matrix[row: row + len(block)] = block
                        row += len(block)
                        writer.write_batch(batch.select(meta_schema.names).cast(meta_schema))
            matrix.flush()
            del matrix
        return [self.target, meta_target]
