"""``kitaeru index``: Faiss indexes over embeddings, with the metadata of every vector.

The job, in order:

1. **build** — read ``kitaeru embed`` output (or any ``(N, dim)`` ``.npy``) and write ``X.faiss`` with
   ``X.index.parquet`` (row id → path, size, text ...) and ``X.index.json`` (type, metric, parameters,
   and the encoder settings that made the vectors). ``--type flat|ivfpq|hnsw`` with parameters chosen
   from N and dim, or ``--type auto`` (:mod:`kitaeru.index.auto_tune`): code size, lists, probes,
   re-ranking depth and graph width are searched on held-out queries, within ``--max-index-memory``,
   and the fastest point that keeps recall@10 ≥ 0.95 is kept, with the curve it came from.
2. **add** — append more vectors from the same encoder without rebuilding (ids continue).
3. **search** — one ``--image`` or ``--text`` (encoded by re-creating the index's encoder) → a table of
   the nearest items; or a batch of ``--queries`` vectors → ``(n, k)`` ids and scores in ``.npy``.
4. **evaluate** (alias ``eval``) — recall@1/10 against exact search and queries/s, single-query on one
   thread and batched.

The library underneath (:mod:`kitaeru.index`) is shared with ``serve`` and ``map``.
"""

from __future__ import annotations

from typing import Any

from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe
from kitaeru.recipes.index.config import IndexAddConfig, IndexBuildConfig, IndexEvaluateConfig, IndexSearchConfig

__all__ = ["RECIPE", "IndexBuildConfig", "IndexAddConfig", "IndexSearchConfig", "IndexEvaluateConfig",
           "build", "add", "search", "evaluate"]


# ---- cheap checks (before Faiss, torch or any model loads) ---------------------------------------
def _local_input(flag: str, path: str | None) -> None:
    from pathlib import Path

    from kitaeru.core.errors import DataError
    from kitaeru.core.storage import is_remote

    if path and not is_remote(path) and not Path(path).exists():
        raise DataError(f"{flag}: {path}: not found")


def _index_file(flag: str, path: str | None) -> None:
    from kitaeru.core.errors import ConfigError

    if path is not None and not str(path).endswith(".faiss"):
        raise ConfigError(f"{flag}: {path}: the index file name must end in .faiss")


def _writable(flag: str, path: str | None) -> None:
    from kitaeru.core.storage import check_output_path

    check_output_path(path, setting=flag)


def check_build(config: IndexBuildConfig) -> None:
    from kitaeru.index.faiss_index import parse_memory

    _index_file("--output", config.output)
    _writable("--output", config.output)
    parse_memory(config.max_index_memory)
    _local_input("--embeddings", config.embeddings)


def check_add(config: IndexAddConfig) -> None:
    _index_file("--output", config.output)
    _writable("--output", config.output)
    _local_input("--embeddings", config.embeddings)


def check_search(config: IndexSearchConfig) -> None:
    from kitaeru.core.errors import ConfigError

    given = [f for f, v in (("--image", config.image), ("--text", config.text), ("--queries", config.queries)) if v is not None]
    if len(given) != 1:
        raise ConfigError("give exactly one of --image PATH, --text \"...\" or --queries Q.npy"
                          + (f" (got {', '.join(given)})" if given else ""))
    if config.queries is not None and config.output is None:
        raise ConfigError("--queries needs --output FILE.npy for the (n, k) ids")
    _query_checks(config.text, config.image)
    _local_input("--queries", config.queries)
    _writable("--output", config.output)


def _query_checks(text: str | None, image: str | None) -> None:
    """An empty text or a missing image is refused here, before the query encoder loads."""
    from pathlib import Path

    from kitaeru.core.errors import ConfigError, DataError
    from kitaeru.core.storage import is_remote

    if text is not None and not text.strip():
        raise ConfigError("--text: the query is empty")
    if image is not None and not is_remote(image) and not Path(image.removeprefix("file://")).is_file():
        raise DataError(f"{image}: image not found (--image)")


# ---- the modes -------------------------------------------------------------------------------
class Hits(list):
    """The hits of one query (``--json`` prints the plain list), with the title of their table."""

    def __init__(self, hits: list[dict[str, Any]], title: str = "hits"):
        super().__init__(hits)
        self.title = title


def build(config: IndexBuildConfig) -> dict[str, Any]:
    """Build an index from ``config.embeddings`` and write it; returns the build summary."""
    from kitaeru.recipes.index import jobs

    _, summary = jobs.build(config)
    return summary


def add(config: IndexAddConfig) -> dict[str, Any]:
    """Append ``config.embeddings`` to ``config.index`` (no rebuild); returns the summary."""
    from kitaeru.recipes.index import jobs

    return jobs.add(config.index, config.embeddings, config.output)


def search(config: IndexSearchConfig) -> Any:
    """The hits of one image/text query (a list of dicts), or the files of a batch search."""
    from kitaeru.core.console import info
    from kitaeru.index.faiss_index import load_index
    from kitaeru.recipes.index import jobs

    loaded = load_index(config.index)
    vectors = jobs.query_vectors(loaded, image=config.image, text=config.text, queries=config.queries,
                                 device=config.device)
    # never more columns than the index has vectors: no padding rows of -1 (a huge k wrote 720 MB of them)
    scores, ids = loaded.search(vectors, max(1, min(config.top_k, loaded.ntotal)))
    if config.queries is not None:
        ids_path, scores_path = jobs.write_batch_results(config.output, scores, ids)
        info(f"{len(ids)} queries: ids -> {ids_path}, scores -> {scores_path}")
        return {"queries": len(ids), "k": int(ids.shape[1]), "ids": ids_path, "scores": scores_path}
    rows = loaded.rows(ids[0])
    score_name = "inner product" if loaded.info.metric == "ip" else "squared L2 distance"
    return Hits([{"rank": r + 1, "score": float(s), **row} for r, (s, row) in enumerate(zip(scores[0], rows))],
                title=f"top {ids.shape[1]} of {loaded.ntotal} ({score_name})")


def evaluate(config: IndexEvaluateConfig) -> dict[str, Any]:
    """Recall@1/10 against exact search and queries/s on queries sampled from the data."""
    from kitaeru.recipes.index import jobs

    return jobs.evaluate(config.index, config.embeddings, config.queries, k=config.top_k, seed=config.seed)


# ---- human summaries (``--json`` prints the results instead) ----------------------------------
def _table(title: str, summary: dict[str, Any]) -> None:
    import json

    from kitaeru.core.console import print_table

    rows = [(k, json.dumps(v) if isinstance(v, dict) else v) for k, v in summary.items() if k != "auto"]
    print_table(title, ["field", "value"], rows)
    auto = summary.get("auto")
    if auto and auto.get("candidates"):
        timed = [c for c in auto["candidates"] if "qps_single_cpu" in c]
        chosen = auto.get("chosen", {})
        print_table(
            f"auto: points timed on {auto['queries']} held-out queries (recall@10 >= {auto['min_recall_at_10']}); "
            f"chosen {chosen.get('type')} at {chosen.get('speedup_vs_flat')}x flat",
            ["type", "params", "recall@10", "q/s per CPU s (1 thread)", "q/s wall"],
            [(c["type"], json.dumps(c["params"]), c["recall_at_10"], c["qps_single_cpu"], c["qps_single"]) for c in timed],
        )
        for skipped in auto.get("skipped", []):
            from kitaeru.core.console import info

            info(f"auto: skipped {skipped['type']} {json.dumps(skipped['params'])}: {skipped['reason']}")


def _print_build(summary: dict[str, Any]) -> None:
    _table("index built", summary)


def _print_add(summary: dict[str, Any]) -> None:
    _table("index extended", summary)


def _print_evaluate(result: dict[str, Any]) -> None:
    _table("index evaluation", result)


def _print_search(result: Any) -> None:
    from kitaeru.core.console import print_table

    if not isinstance(result, list):
        return  # batch search: the files were announced on stderr
    extra = "text" if any(h.get("text") for h in result) else None
    columns = ["rank", "score", "id", "path"] + ([extra] if extra else [])
    print_table(getattr(result, "title", "hits"), columns, [[h.get(c) for c in columns] for h in result])


RECIPE = Recipe(
    name="index",
    help=JOBS["index"],
    modes=[
        Mode(
            name="build", schema=IndexBuildConfig, run=build, check=check_build, summary=_print_build,
            help="Build an index from embeddings and write X.faiss, X.index.parquet and X.index.json.",
            examples=[
                "kitaeru index build --embeddings vectors/embeddings.parquet --output indexes/scenes.faiss --type hnsw",
                "kitaeru index build --embeddings vectors/shards/ --output indexes/big.faiss --type auto --max-index-memory 4G --json",
                "kitaeru index build -e any_matrix.npy -o indexes/m.faiss --type ivfpq --metric l2 nlist=1024 nprobe=32",
            ],
        ),
        Mode(
            name="add", schema=IndexAddConfig, run=add, check=check_add, summary=_print_add,
            help="Append embeddings to an index without rebuilding it; new ids continue after the last one.",
            examples=["kitaeru index add --index indexes/scenes.faiss --embeddings vectors/more.parquet"],
        ),
        Mode(
            name="search", schema=IndexSearchConfig, run=search, check=check_search, summary=_print_search,
            help="Nearest neighbours of one image or text (a table), or of a batch of vectors (.npy files).",
            examples=[
                "kitaeru index search --index indexes/scenes.faiss --text \"a truck at an intersection\" --top-k 10",
                "kitaeru index search --index indexes/scenes.faiss --image query.jpg --top-k 5 --json",
                "kitaeru index search --index indexes/scenes.faiss --queries q.npy --top-k 10 --output ids.npy",
            ],
        ),
        Mode(
            name="evaluate", schema=IndexEvaluateConfig, run=evaluate, summary=_print_evaluate, aliases=("eval",),
            help="Recall@1/10 against exact search, and queries/s single-query (one thread) and batched.",
            examples=["kitaeru index eval --index indexes/scenes.faiss --embeddings vectors/embeddings.parquet --queries 1000 --json"],
        ),
    ],
)
