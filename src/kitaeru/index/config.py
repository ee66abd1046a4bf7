"""Config schema of ``kitaeru index build`` (light imports only: used by the CLI for its help text)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, PositiveInt

from kitaeru.core.config import RecipeConfig


class IndexBuildConfig(RecipeConfig):
    """Settings of one index build. Index parameters left empty are chosen from N and the dimension."""

    embeddings: str = Field(
        description="Embeddings to index: an `kitaeru embed` output (.parquet file, folder of .parquet shards, "
        ".npy with .meta.parquet beside it) or any bare (N, dim) .npy float matrix (row numbers become ids).",
    )
    index_out: str = Field(description="Index file to write, X.faiss (X.index.parquet and X.index.json are written beside it).")
    type: Literal["flat", "ivfpq", "hnsw", "auto"] = Field(
        "auto",
        description="Index type: flat (exact), ivfpq (IVF + product quantisation, re-ranked exactly), hnsw (graph), "
        "auto (fastest type that keeps recall@10 >= 0.95 on this data; flat for small N).",
    )
    metric: Literal["ip", "l2"] = Field(
        "ip", description="Similarity: ip = inner product (cosine on normalised embeddings), l2 = squared Euclidean distance."
    )
    nlist: Optional[PositiveInt] = Field(None, description="ivfpq: number of inverted lists (default ~4*sqrt(N)).")
    pq_m: Optional[PositiveInt] = Field(None, description="ivfpq: PQ sub-quantisers, must divide dim (default dim/8 or the next even divisor below).")
    pq_nbits: Optional[PositiveInt] = Field(None, description="ivfpq: bits per PQ code (default 4 = SIMD fast-scan codes; fewer for tiny N; 8 = classic PQ).")
    nprobe: Optional[PositiveInt] = Field(None, description="ivfpq: lists visited per query (default ~nlist/16, at least 8).")
    k_factor: Optional[PositiveInt] = Field(None, description="ivfpq: candidates re-ranked exactly = k_factor * k (default 16).")
    hnsw_m: Optional[PositiveInt] = Field(None, description="hnsw: graph neighbours per node, HNSW's M (default 32).")
    ef_construction: Optional[PositiveInt] = Field(None, description="hnsw: efConstruction, build-time search width (default 80).")
    ef_search: Optional[PositiveInt] = Field(None, description="hnsw: efSearch, query-time search width (default 96).")

    def index_params(self) -> dict[str, int]:
        """The explicitly given index parameters (the rest are chosen from N and dim)."""
        names = ("nlist", "pq_m", "pq_nbits", "nprobe", "k_factor", "hnsw_m", "ef_construction", "ef_search")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}
