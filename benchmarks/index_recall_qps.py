"""Vector search: exact flat search (the plain way) vs the index ``kitaeru index build --type auto`` picks.

Two generated data sets, with queries drawn from the same distribution but NOT in the index:

* ``--data powerlaw`` (default, 100k x 256): Gaussian vectors whose covariance spectrum falls as a
  power law (variance of the i-th direction ~ i^-alpha, alpha 1, randomly rotated), L2-normalised:
  no cluster structure to lean on, like real embeddings. Coarse codes and few probes lose here.
* ``--data clustered`` (200k x 768): tight clusters in a low-dimensional subspace; every index
  reaches recall 1.000 on it, so it says little about recall (kept for comparison).

For flat and for ``auto`` (and, with ``--types``, the fixed-parameter ivfpq/hnsw defaults) it prints build
seconds, recall@1/10 against exact search and single-thread single-query speed, both wall-clock q/s
and queries per CPU second of the searching thread (steadier on a shared machine). The last line is
the speed-up of the ``auto`` index over flat, in queries per CPU second, at the recall it keeps.

    python benchmarks/index_recall_qps.py                          # power law, 100k x 256 (~3-4 min on 2 busy cores)
    python benchmarks/index_recall_qps.py --types                  # + ivfpq/hnsw with default parameters
    python benchmarks/index_recall_qps.py --data clustered --n 50000
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


def powerlaw_vectors(n: int, dim: int, alpha: float = 1.0, seed: int = 0, chunk: int = 50_000) -> np.ndarray:
    """Unit vectors whose covariance has eigenvalues ~ i^-alpha in a random orthonormal basis."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(1, dim + 1, dtype=np.float32) ** (-alpha / 2)).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    rotation = rotation.astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        block = (rng.standard_normal((m, dim), dtype=np.float32) * scale) @ rotation
        out[start: start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["powerlaw", "clustered"], default="powerlaw", help="generated data set (default powerlaw)")
    parser.add_argument("--n", type=int, default=None, help="database vectors (default 100000 powerlaw, 200000 clustered)")
    parser.add_argument("--dim", type=int, default=None, help="dimension (default 256 powerlaw, 768 clustered)")
    parser.add_argument("--alpha", type=float, default=1.0, help="powerlaw: spectrum exponent (default 1.0)")
    parser.add_argument("--queries", type=int, default=500, help="query vectors, not in the database (default 500)")
    parser.add_argument("--clusters", type=int, default=1000, help="clustered: clusters (default 1000)")
    parser.add_argument("--types", action="store_true", help="also build ivfpq and hnsw with their default parameters")
    parser.add_argument("--max-index-memory", default=None, help="auto's memory budget, e.g. 4G")
    parser.add_argument("--threads", type=int, default=0, help="Faiss threads for building (0 = all)")
    args = parser.parse_args()
    n = args.n or (100_000 if args.data == "powerlaw" else 200_000)
    dim = args.dim or (256 if args.data == "powerlaw" else 768)

    import faiss

    from kitaeru.index.evaluation import exact_search, recall_at, single_query_speed
    from kitaeru.index.faiss_index import build_index

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    start = time.perf_counter()
    if args.data == "powerlaw":
        data = powerlaw_vectors(n + args.queries, dim, args.alpha)
        what = f"power-law spectrum (alpha {args.alpha})"
    else:
        data = clustered_vectors(n + args.queries, dim, args.clusters)
        what = f"{args.clusters} clusters"
    base, queries = data[:n], data[n:]
    print(f"data: {n} x {dim} unit vectors, {what}, {args.queries} queries not in the index "
          f"({time.perf_counter() - start:.1f}s to generate); faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads", flush=True)
    _, truth = exact_search(base, queries, 10, "ip")

    results = []
    types = ["flat", "auto"] + (["ivfpq", "hnsw"] if args.types else [])
    for index_type in types:
        t0, c0 = time.perf_counter(), time.process_time()
        index = build_index(base, index_type=index_type, metric="ip",
                            max_index_memory=args.max_index_memory if index_type == "auto" else None)
        build_s, build_cpu = time.perf_counter() - t0, time.process_time() - c0
        _, found = index.index.search(queries, 10)
        speed = single_query_speed(index.index, queries, 10, budget_s=10.0)
        params = {k: v for k, v in index.info.params.items() if k != "auto"}
        label = f"auto→{index.info.type}" if index_type == "auto" else index_type
        results.append({"type": label, "build_s": build_s, "build_cpu": build_cpu, "recall1": recall_at(found, truth, 1),
                        "recall10": recall_at(found, truth, 10), "qps": speed["wall"], "qps_cpu": speed["cpu"],
                        "params": params})
        print(f"  {label:<12} built in {build_s:6.1f}s wall / {build_cpu:6.1f}s CPU  params {params}", flush=True)
        if index_type == "auto":
            report = index.info.params["auto"]
            print(f"  auto tuned in {report.get('tuning_seconds', 0)}s on its own {report.get('queries', 0)} held-out "
                  f"queries: {sum('qps_single_cpu' in c for c in report['candidates'])} points timed, "
                  f"{len(report['candidates'])} measured, {len(report.get('skipped', []))} skipped", flush=True)
        del index

    flat = results[0]
    print(f"\n{'type':<13}{'build s':>9}{'recall@1':>10}{'recall@10':>11}{'q/s wall':>10}{'q/s CPU':>10}{'vs flat (CPU)':>15}")
    for r in results:
        print(f"{r['type']:<13}{r['build_s']:>9.1f}{r['recall1']:>10.3f}{r['recall10']:>11.3f}{r['qps']:>10.1f}"
              f"{r['qps_cpu']:>10.1f}{r['qps_cpu'] / flat['qps_cpu']:>14.1f}x")
    auto = results[1]
    print(f"plain exact search (flat): {flat['qps_cpu']:.1f} queries per CPU second (1 thread); kitaeru {auto['type']} "
          f"(recall@10 {auto['recall10']:.3f} on queries not in the index): {auto['qps_cpu']:.1f}; wall-clock ratio "
          f"{auto['qps'] / flat['qps']:.1f}x")
    print(f"ratio (kitaeru {auto['type']} / flat, single-thread queries per CPU second, recall@10 "
          f"{auto['recall10']:.3f}): {auto['qps_cpu'] / flat['qps_cpu']:.1f}x")


if __name__ == "__main__":
    main()
