"""Config schemas of ``kitaeru index build|add|search|evaluate`` (light imports only: read by the CLI)."""

from __future__ import annotations

from typing import Literal, Optional

from kitaeru.core.config import RecipeConfig, setting

INDEX_PARAMS = ("nlist", "pq_m", "pq_nbits", "nprobe", "k_factor", "hnsw_m", "ef_construction", "ef_search")

_EMBEDDINGS = ("an `kitaeru embed` output (.parquet file, folder of .parquet shards, .npy with .meta.parquet beside it) "
               "or any bare (N, dim) .npy float matrix (row numbers become ids)")


class IndexBuildConfig(RecipeConfig):
    """Settings of one index build. Index parameters left empty are chosen from N and the dimension
    (or, with ``--type auto``, searched on held-out queries)."""

    embeddings: str = setting(..., f"Embeddings to index: {_EMBEDDINGS}.", short="-e", metavar="PATH")
    output: str = setting(..., "Index file to write, X.faiss (X.index.parquet and X.index.json are written beside it).",
                          aliases=["index_out", "out"], short="-o", metavar="X.faiss")
    type: Literal["flat", "ivfpq", "hnsw", "auto"] = setting(
        "auto",
        "Index type: flat (exact), ivfpq (IVF + product quantisation, re-ranked exactly), hnsw (graph), "
        "auto (the fastest type and parameters that keep recall@10 >= 0.95 on held-out queries; flat for small N).",
        aliases=["index-type"],
    )
    metric: Literal["ip", "l2"] = setting(
        "ip", "Similarity: ip = inner product (cosine on normalised embeddings), l2 = squared Euclidean distance.")
    max_index_memory: Optional[str] = setting(
        None, "Memory budget of the index, e.g. 4G or 512M: auto skips candidates estimated above it; an explicit "
        "type that does not fit is an error.", metavar="SIZE")
    nlist: Optional[int] = setting(None, "ivfpq: number of inverted lists (default ~4*sqrt(N); auto tries sqrt(N)/2 and sqrt(N)).", ge=1)
    pq_m: Optional[int] = setting(None, "ivfpq: PQ sub-quantisers, must divide dim (default dim/8; auto tries dim/4 and dim/2).", ge=1)
    pq_nbits: Optional[int] = setting(None, "ivfpq: bits per PQ code (default 4 = SIMD fast-scan codes; fewer for tiny N; 8 = classic PQ).", ge=1)
    nprobe: Optional[int] = setting(None, "ivfpq: lists visited per query (default ~nlist/16, at least 8; auto searches it).", ge=1)
    k_factor: Optional[int] = setting(None, "ivfpq: candidates re-ranked exactly = k_factor * k (default 16; auto searches it).", ge=1)
    hnsw_m: Optional[int] = setting(None, "hnsw: graph neighbours per node, HNSW's M (default 32; auto tries 32 and 16).", ge=1)
    ef_construction: Optional[int] = setting(None, "hnsw: efConstruction, build-time search width (default 80).", ge=1)
    ef_search: Optional[int] = setting(None, "hnsw: efSearch, query-time search width (default 96; auto searches it).", ge=1)

    def index_params(self) -> dict[str, int]:
        """The explicitly given index parameters (the rest are chosen from N and dim, or searched)."""
        return {n: getattr(self, n) for n in INDEX_PARAMS if getattr(self, n) is not None}


class IndexAddConfig(RecipeConfig):
    """Append embeddings to an index without rebuilding it."""

    index: str = setting(..., "The index to extend (X.faiss).", short="-i", metavar="X.faiss")
    embeddings: str = setting(..., "More embeddings from the same model (any embed output or .npy).", short="-e",
                              metavar="PATH")
    output: Optional[str] = setting(None, "Write the extended index here instead of in place (X2.faiss).",
                                    aliases=["out"], short="-o", metavar="X2.faiss")


class IndexSearchConfig(RecipeConfig):
    """Nearest neighbours of one image or text, or of a batch of vectors."""

    index: str = setting(..., "The index to search (X.faiss).", short="-i", metavar="X.faiss")
    image: Optional[str] = setting(None, "Query image (path or URL), encoded with the index's model.", metavar="PATH")
    text: Optional[str] = setting(None, "Query text, encoded with the index's CLIP-family model.")
    queries: Optional[str] = setting(None, "A (n, dim) .npy of query vectors: batch search (needs --output).", metavar="Q.npy")
    top_k: int = setting(10, "Results per query (1-10000; at most the index's size is returned).", short="-k", ge=1, le=10_000)
    output: Optional[str] = setting(None, "Batch search: write the (n, k) ids here (.npy) and the scores beside it "
                                    "(.scores.npy).", aliases=["out"], short="-o", metavar="IDS.npy")
    device: str = setting("auto", "Device of the query encoder: auto|cuda|mps|cpu or cuda:N.")


class IndexEvaluateConfig(RecipeConfig):
    """Recall against exact search and single/batched speed of an index."""

    index: str = setting(..., "The index to evaluate (X.faiss).", short="-i", metavar="X.faiss")
    embeddings: Optional[str] = setting(None, "Sample queries from these embeddings (default: the index's own vectors).",
                                        short="-e", metavar="PATH")
    queries: int = setting(1000, "Number of queries to sample.", ge=1)
    top_k: int = setting(10, "k of recall@k (recall@1 is reported too).", ge=1, le=10_000, flag=False)
    seed: int = setting(0, "Seed of the query sample.")
