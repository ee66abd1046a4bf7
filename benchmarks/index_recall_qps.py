"""Vector search: exact flat search (the plain way) vs kitaeru's ivfpq and hnsw indexes.

Generates clustered unit vectors shaped like image embeddings (cluster centres plus variation in a
low-dimensional subspace plus a little isotropic noise), builds every index type with the
parameters kitaeru chooses from N and dim, and reports for each: build seconds, recall@1/10
against exact search, single-thread single-query queries/s and the ratio to flat. The last line is
the speed-up of the fastest type that keeps recall@10 >= 0.95 (what ``--type auto`` would keep).

    python benchmarks/index_recall_qps.py                 # 200k x 768 (about 5-8 minutes on 2 cores)
    python benchmarks/index_recall_qps.py --n 50000       # quicker
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def clustered_vectors(n: int, dim: int, clusters: int, seed: int = 0, chunk: int = 20_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    basis = rng.normal(size=(64, dim)).astype(np.float32) / np.sqrt(64)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        local = rng.normal(size=(m, 64)).astype(np.float32) @ basis * 0.6
        block = centres[rng.integers(0, clusters, m)] + local + 0.05 * rng.normal(size=(m, dim)).astype(np.float32)
        out[start: start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000, help="database vectors (default 200000)")
    parser.add_argument("--dim", type=int, default=768, help="dimension (default 768, ViT-L/14)")
    parser.add_argument("--queries", type=int, default=500, help="query vectors, not in the database (default 500)")
    parser.add_argument("--clusters", type=int, default=1000, help="clusters in the generated data (default 1000)")
    parser.add_argument("--threads", type=int, default=0, help="Faiss threads for building (0 = all)")
    args = parser.parse_args()

    import faiss

    from kitaeru.index.evaluation import exact_search, queries_per_second_single, recall_at
    from kitaeru.index.faiss_index import AUTO_MIN_RECALL, build_index

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    data = clustered_vectors(args.n + args.queries, args.dim, args.clusters)
    base, queries = data[: args.n], data[args.n:]
    print(f"data: {args.n} x {args.dim} clustered unit vectors, {args.queries} held-out queries "
          f"({time.perf_counter() - start:.1f}s to generate); faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    _, truth = exact_search(base, queries, 10, "ip")

    results = []
    for index_type in ("flat", "ivfpq", "hnsw"):
        t0 = time.perf_counter()
        index = build_index(base, index_type=index_type, metric="ip")
        build_s = time.perf_counter() - t0
        _, found = index.index.search(queries, 10)
        qps = queries_per_second_single(index.index, queries, 10, budget_s=10.0)
        params = {k: v for k, v in index.info.params.items() if k != "auto"}
        results.append({"type": index_type, "build_s": build_s, "recall1": recall_at(found, truth, 1),
                        "recall10": recall_at(found, truth, 10), "qps": qps, "params": params})
        print(f"  {index_type:<6} built in {build_s:6.1f}s  params {params}", flush=True)
        del index

    flat_qps = results[0]["qps"]
    print(f"\n{'type':<7}{'build s':>9}{'recall@1':>10}{'recall@10':>11}{'qps (1 thread)':>16}{'vs flat':>9}")
    for r in results:
        print(f"{r['type']:<7}{r['build_s']:>9.1f}{r['recall1']:>10.3f}{r['recall10']:>11.3f}{r['qps']:>16.1f}"
              f"{r['qps'] / flat_qps:>8.1f}x")
    keep = [r for r in results if r["recall10"] >= AUTO_MIN_RECALL]
    best = max(keep, key=lambda r: r["qps"])
    print(f"plain exact search (flat): {flat_qps:.1f} queries/s; kitaeru {best['type']} (recall@10 "
          f"{best['recall10']:.3f}): {best['qps']:.1f} queries/s")
    print(f"ratio (kitaeru {best['type']} / flat, single-thread queries/s at recall@10 >= {AUTO_MIN_RECALL}): "
          f"{best['qps'] / flat_qps:.1f}x")


if __name__ == "__main__":
    main()
