"""How good and how fast an index is: recall@1/10 against exact search, and queries per second.

* recall@1 — the fraction of queries whose first hit is the exact nearest neighbour.
* recall@10 — the mean overlap between the index's top 10 and the exact top 10, divided by 10.
* qps_single — one query per call, Faiss limited to one thread (what one server request sees).
* qps_single_cpu — the same loop timed by the thread's CPU clock: queries per CPU second, which
  other jobs on a shared machine disturb far less than wall time (``auto`` ranks by it).
* qps_batch — all queries in one call with every thread (what a bulk job sees).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from kitaeru.index.faiss_index import VectorIndex


def exact_search(database: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-``k`` of ``queries`` in ``database`` (the ground truth)."""
    import faiss

    flat = faiss.IndexFlatIP(database.shape[1]) if metric == "ip" else faiss.IndexFlatL2(database.shape[1])
    flat.add(np.ascontiguousarray(database, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(database)))


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean ``|found[:, :k] ∩ truth[:, :k]| / k`` (for k = 1: the top hit is the exact one)."""
    k = min(k, truth.shape[1], found.shape[1])
    if k == 0 or len(truth) == 0:
        return 0.0
    hits = sum(len(set(f[:k].tolist()) & set(t[:k].tolist()) - {-1}) for f, t in zip(found, truth))
    return float(hits) / (k * len(truth))


class single_thread:
    """Context manager: Faiss runs on one OpenMP thread inside, as many as before afterwards."""

    def __enter__(self) -> "single_thread":
        import faiss

        self._before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        return self

    def __exit__(self, *exc) -> None:
        import faiss

        faiss.omp_set_num_threads(self._before)


def single_query_speed(faiss_index: Any, queries: np.ndarray, k: int, budget_s: float = 3.0,
                       warmup: int = 3) -> dict[str, float]:
    """One query per ``search`` call on one thread, timed by the wall clock and by the thread's CPU
    clock; stops early after ``budget_s`` wall seconds (and at least 10 queries)."""
    for i in range(min(warmup, len(queries))):
        faiss_index.search(queries[i : i + 1], k)
    done, start, cpu_start = 0, time.perf_counter(), time.thread_time()
    with single_thread():
        for i in range(len(queries)):
            faiss_index.search(queries[i : i + 1], k)
            done += 1
            if time.perf_counter() - start > budget_s and done >= 10:
                break
    wall, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    return {"wall": done / max(wall, 1e-9), "cpu": done / max(cpu, 1e-9)}


def queries_per_second_batch(faiss_index: Any, queries: np.ndarray, k: int) -> float:
    start = time.perf_counter()
    faiss_index.search(queries, k)
    return len(queries) / max(time.perf_counter() - start, 1e-9)


def measure_index(index: "VectorIndex", queries: np.ndarray, truth: np.ndarray, k: int = 10) -> dict[str, float]:
    """Recall@1/10 of ``index`` against ``truth`` ids and its single/batched queries per second."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    _, found = index.index.search(q, k)
    speed = single_query_speed(index.index, q, k)
    return {
        "recall_at_1": round(recall_at(found, truth, 1), 4),
        "recall_at_10": round(recall_at(found, truth, 10), 4),
        "qps_single": round(speed["wall"], 1),
        "qps_single_cpu": round(speed["cpu"], 1),
        "qps_batch": round(queries_per_second_batch(index.index, q, k), 1),
    }


def evaluate_index(index: "VectorIndex", queries: np.ndarray, k: int = 10) -> dict[str, Any]:
    """Recall and speed of ``index`` on ``queries`` against exact search over its own stored vectors."""
    q = index.prepare_queries(queries)
    _, truth = exact_search(index.reconstruct_all(), q, k, index.info.metric)
    result = measure_index(index, q, truth, k)
    return {"type": index.info.type, "metric": index.info.metric, "ntotal": index.ntotal, "dim": index.dim,
            "queries": len(q), "k": k, **result, "params": {key: v for key, v in index.info.params.items() if key != "auto"}}
