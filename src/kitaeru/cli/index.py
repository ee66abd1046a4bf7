"""``kitaeru index build|add|search|eval``: Faiss indexes over embeddings, with their metadata (seed 001)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from kitaeru.cli._common import DEVICE_HELP, CfgNameOption, ConfigFileOption, build_config
from kitaeru.core.config import field_help
from kitaeru.index.config import IndexBuildConfig

app = typer.Typer(help="Build, extend, search and evaluate Faiss indexes over embeddings.", no_args_is_help=True)

S = IndexBuildConfig


@app.callback()
def index() -> None:
    """Faiss indexes (flat / ivfpq / hnsw / auto) over `kitaeru embed` outputs or any .npy matrix.

    An index is X.faiss with X.index.parquet (row id -> path and metadata) and X.index.json (model, pool,
    type, parameters) beside it.
    """


def _print_json(obj: object) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def _print_summary(title: str, summary: dict) -> None:
    from kitaeru.core.console import print_table

    rows = [(k, json.dumps(v) if isinstance(v, dict) else v) for k, v in summary.items() if k != "auto"]
    print_table(title, ["field", "value"], rows)
    auto = summary.get("auto")
    if auto and auto.get("candidates"):
        print_table(
            f"auto: candidates measured on {auto['queries']} queries (keep recall@10 >= {auto['min_recall_at_10']})",
            ["type", "params", "recall@1", "recall@10", "qps single", "qps batch"],
            [(c["type"], json.dumps(c["params"]), c["recall_at_1"], c["recall_at_10"], c["qps_single"], c["qps_batch"])
             for c in auto["candidates"]],
        )


@app.command("build")
def build(
    embeddings: Optional[str] = typer.Option(None, "--embeddings", "-e", help=field_help(S, "embeddings")),
    index_out: Optional[str] = typer.Option(None, "--index-out", "-o", help=field_help(S, "index_out")),
    type: Optional[str] = typer.Option(None, "--type", help=field_help(S, "type")),
    metric: Optional[str] = typer.Option(None, "--metric", help=field_help(S, "metric")),
    nlist: Optional[int] = typer.Option(None, "--nlist", help=field_help(S, "nlist")),
    pq_m: Optional[int] = typer.Option(None, "--pq-m", help=field_help(S, "pq_m")),
    pq_nbits: Optional[int] = typer.Option(None, "--pq-nbits", help=field_help(S, "pq_nbits")),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help=field_help(S, "nprobe")),
    k_factor: Optional[int] = typer.Option(None, "--k-factor", help=field_help(S, "k_factor")),
    hnsw_m: Optional[int] = typer.Option(None, "--hnsw-m", help=field_help(S, "hnsw_m")),
    ef_construction: Optional[int] = typer.Option(None, "--ef-construction", help=field_help(S, "ef_construction")),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help=field_help(S, "ef_search")),
    cfg_name: Optional[str] = CfgNameOption,
    config_file: Optional[Path] = ConfigFileOption,
    as_json: bool = typer.Option(False, "--json", help="Print the build summary as JSON on stdout."),
) -> None:
    """Build an index from embeddings and write X.faiss, X.index.parquet and X.index.json."""
    cfg = build_config(
        IndexBuildConfig, "index", cfg_name, config_file, embeddings=embeddings, index_out=index_out, type=type,
        metric=metric, nlist=nlist, pq_m=pq_m, pq_nbits=pq_nbits, nprobe=nprobe, k_factor=k_factor, hnsw_m=hnsw_m,
        ef_construction=ef_construction, ef_search=ef_search,
    )
    from kitaeru.index import jobs

    _, summary = jobs.build(cfg)
    _print_json(summary) if as_json else _print_summary("index built", summary)


@app.command("add")
def add(
    index: str = typer.Option(..., "--index", "-i", help="The index to extend (X.faiss)."),
    embeddings: str = typer.Option(..., "--embeddings", "-e", help="More embeddings from the same model (any embed output or .npy)."),
    out: Optional[str] = typer.Option(None, "--out", help="Write the extended index here instead of in place (X2.faiss)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Append embeddings to an index without rebuilding it; new ids continue after the last one."""
    from kitaeru.index import jobs

    summary = jobs.add(index, embeddings, out)
    _print_json(summary) if as_json else _print_summary("index extended", summary)


@app.command("search")
def search(
    index: str = typer.Option(..., "--index", "-i", help="The index to search (X.faiss)."),
    image: Optional[str] = typer.Option(None, "--image", help="Query image (path or URL), encoded with the index's model."),
    text: Optional[str] = typer.Option(None, "--text", help="Query text, encoded with the index's CLIP-family model."),
    queries: Optional[str] = typer.Option(None, "--queries", help="A (n, dim) .npy of query vectors: batch search."),
    top_k: int = typer.Option(10, "--top-k", "-k", min=1, help="Results per query."),
    out: Optional[str] = typer.Option(None, "--out", help="Batch search: write the (n, k) ids here (.npy) and the scores beside it (.scores.npy)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Nearest neighbours of one image or text (a table), or of a batch of vectors (.npy files)."""
    from kitaeru.core.console import info, print_table
    from kitaeru.core.errors import ConfigError
    from kitaeru.index import jobs
    from kitaeru.index.faiss_index import load_index

    loaded = load_index(index)
    if queries is not None and out is None:
        raise ConfigError("--queries needs --out FILE.npy for the (n, k) ids")
    vectors = jobs.query_vectors(loaded, image=image, text=text, queries=queries, device=device)
    scores, ids = loaded.search(vectors, top_k)
    if queries is not None:
        ids_path, scores_path = jobs.write_batch_results(out, scores, ids)
        info(f"{len(ids)} queries: ids -> {ids_path}, scores -> {scores_path}")
        if as_json:
            _print_json({"queries": len(ids), "k": top_k, "ids": ids_path, "scores": scores_path})
        return
    rows = loaded.rows(ids[0])
    hits = [{"rank": r + 1, "score": float(s), **row} for r, (s, row) in enumerate(zip(scores[0], rows))]
    if as_json:
        _print_json(hits)
        return
    extra = "text" if any(h.get("text") for h in hits) else None
    columns = ["rank", "score", "id", "path"] + ([extra] if extra else [])
    score_name = "inner product" if loaded.info.metric == "ip" else "squared L2 distance"
    print_table(f"top {top_k} of {loaded.ntotal} ({score_name})", columns,
                [[h.get(c) for c in columns] for h in hits])


@app.command("eval")
def evaluate(
    index: str = typer.Option(..., "--index", "-i", help="The index to evaluate (X.faiss)."),
    embeddings: Optional[str] = typer.Option(None, "--embeddings", "-e", help="Sample queries from these embeddings (default: the index's own vectors)."),
    queries: int = typer.Option(1000, "--queries", min=1, help="Number of queries to sample."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query sample."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Recall@1/10 against exact search, and queries/s single-query (one thread) and batched."""
    from kitaeru.index import jobs

    result = jobs.evaluate(index, embeddings, queries, seed=seed)
    _print_json(result) if as_json else _print_summary("index evaluation", result)
