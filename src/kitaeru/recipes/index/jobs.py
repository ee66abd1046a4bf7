"""What the ``kitaeru index`` modes do: build, add, search and evaluate (the entry points in ``__init__`` call these)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kitaeru.core.console import info as say, warn
from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.storage import is_remote
from kitaeru.index.embeddings_io import Embeddings, load_matrix, read_embeddings
from kitaeru.index.faiss_index import VectorIndex, build_index, load_index, sidecar_paths
from kitaeru.recipes.index.config import IndexBuildConfig


def _check_index_name(path: str) -> None:
    if not str(path).endswith(".faiss"):
        raise ConfigError(f"--output: {path}: the index file name must end in .faiss")


def save_index(index: VectorIndex, target: str) -> str:
    """Save to a local path, or save locally and upload the three files to a URL."""
    if not is_remote(target):
        return str(index.save(target))
    from kitaeru.core.storage import filesystem

    fs, remote = filesystem(target)
    with tempfile.TemporaryDirectory(prefix="kitaeru-index-") as tmp:
        local = index.save(Path(tmp) / Path(remote).name)
        remote_stem = remote[: -len(".faiss")]
        for part, suffix in zip(sidecar_paths(local), (".faiss", ".index.parquet", ".index.json")):
            fs.put_file(str(part), remote_stem + suffix)
    index.path = None
    return target


def build(cfg: IndexBuildConfig) -> tuple[VectorIndex, dict[str, Any]]:
    """Read ``cfg.embeddings``, build the index and write it with its metadata and JSON."""
    _check_index_name(cfg.output)
    emb = read_embeddings(cfg.embeddings)
    if cfg.metric == "ip" and emb.info.normalized is False:
        warn(f"{cfg.embeddings}: vectors are not normalised, so ip scores are raw inner products, not cosine")
    say(f"building an index (type {cfg.type}, metric {cfg.metric}) over {len(emb)} vectors of dimension {emb.dim}")
    start = time.perf_counter()
    index = build_index(emb.vectors, emb.metadata, index_type=cfg.type, metric=cfg.metric, params=cfg.index_params(),
                        info=emb.info, source=cfg.embeddings, max_index_memory=cfg.max_index_memory)
    seconds = time.perf_counter() - start
    written = save_index(index, cfg.output)
    return index, _summary(index, written, build_seconds=round(seconds, 3), added=len(emb))


def _summary(index: VectorIndex, written: str, **extra: Any) -> dict[str, Any]:
    params = {k: v for k, v in index.info.params.items() if k != "auto"}
    faiss_path, meta_path, json_path = sidecar_paths(written)
    out = {"index": str(faiss_path), "metadata": str(meta_path), "info": str(json_path), "type": index.info.type,
           "metric": index.info.metric, "ntotal": index.ntotal, "dim": index.dim, "params": params,
           "model": index.info.model, "pool": index.info.pool, **extra}
    if "auto" in index.info.params:
        out["auto"] = index.info.params["auto"]
    return out


def check_compatible(index: VectorIndex, emb: Embeddings, source: str) -> None:
    """Vectors to add must come from the same encoder settings as the index's."""
    if emb.dim != index.dim:
        raise DataError(f"{source}: {emb.dim}-d vectors but the index holds {index.dim}-d vectors")
    ours = index.info.embedding_info()
    if not ours.same_encoder(emb.info):
        theirs = emb.info
        raise ConfigError(
            f"{source}: made with model={theirs.model} pretrained={theirs.pretrained} pool={theirs.pool} "
            f"image_size={theirs.image_size} normalized={theirs.normalized}, but the index holds model={ours.model} "
            f"pretrained={ours.pretrained} pool={ours.pool} image_size={ours.image_size} normalized={ours.normalized}"
        )


def add(index_path: str, embeddings: str, out: str | None = None) -> dict[str, Any]:
    """Append ``embeddings`` to the index at ``index_path`` (no rebuild) and save it to ``out`` or in place."""
    target = out or index_path
    _check_index_name(target)
    index = load_index(index_path)
    emb = read_embeddings(embeddings)
    check_compatible(index, emb, embeddings)
    before = index.ntotal
    if "path" in emb.metadata.column_names:
        known = set(index.metadata.column("path").drop_null().to_pylist()) if "path" in index.metadata.column_names else set()
        again = sum(1 for p in emb.metadata.column("path").to_pylist() if p is not None and p in known)
        if again:
            warn(f"{embeddings}: {again} path(s) are already in the index and were added again")
    start = time.perf_counter()
    index.add(emb.vectors, emb.metadata, source=embeddings)
    seconds = time.perf_counter() - start
    written = save_index(index, target)
    return _summary(index, written, added=index.ntotal - before, add_seconds=round(seconds, 3))


def query_vectors(index: VectorIndex, *, image: str | None, text: str | None, queries: str | None,
                  device: str = "cpu") -> np.ndarray:
    """The query matrix for exactly one of ``--image``, ``--text`` or ``--queries``."""
    given = [name for name, value in (("--image", image), ("--text", text), ("--queries", queries)) if value is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one of --image PATH, --text \"...\" or --queries Q.npy"
                          + (f" (got {', '.join(given)})" if given else ""))
    if queries is not None:
        return load_matrix(queries)
    from kitaeru.core.device import resolve_device
    from kitaeru.index.queries import create_query_encoder, encode_image_queries, encode_text_queries

    encoder = create_query_encoder(index.info, device=resolve_device(device).device)
    if text is not None:
        if not text.strip():
            raise ConfigError("--text: empty query")
        return encode_text_queries(encoder, [text])
    return encode_image_queries(encoder, [image])


def write_batch_results(out: str, scores: np.ndarray, ids: np.ndarray) -> tuple[str, str]:
    """``ids`` to ``out`` and ``scores`` to ``<out stem>.scores.npy`` beside it (atomically)."""
    from kitaeru.core.storage import atomic_path

    if not out.endswith(".npy"):
        raise ConfigError(f"--output: {out}: expected a .npy file name for the (n, k) ids")
    scores_path = out[: -len(".npy")] + ".scores.npy"
    for path, array in ((out, ids), (scores_path, scores)):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array)
    return out, scores_path


def evaluate(index_path: str, embeddings: str | None = None, n_queries: int = 1000, k: int = 10,
             seed: int = 0) -> dict[str, Any]:
    """Recall@1/10 vs exact search and queries/s (single and batched) on queries sampled from
    ``embeddings`` (or from the index's own vectors)."""
    from kitaeru.index.evaluation import evaluate_index

    if n_queries < 1:
        raise ConfigError(f"--queries: must be at least 1, got {n_queries}")
    index = load_index(index_path)
    if index.ntotal == 0:
        raise DataError(f"{index_path}: the index is empty")
    if embeddings:
        pool = read_embeddings(embeddings).vectors
        if pool.shape[1] != index.dim:
            raise DataError(f"{embeddings}: {pool.shape[1]}-d vectors but the index holds {index.dim}-d vectors")
    else:
        pool = index.reconstruct_all()
    rng = np.random.default_rng(seed)
    picked = pool[np.sort(rng.choice(len(pool), min(n_queries, len(pool)), replace=False))]
    result = evaluate_index(index, picked, k=k)
    result["index"] = str(index_path)
    result["queries_from"] = str(embeddings) if embeddings else "index vectors"
    return result
