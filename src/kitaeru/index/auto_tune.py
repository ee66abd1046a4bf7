"""``--type auto``: the fastest index that keeps recall@10 ≥ 0.95, found by measuring, as autofaiss does.

1. **Held-out queries.** ``AUTO_QUERIES`` vectors are drawn from the data and left out of every index
   built while tuning; the truth is exact search over the rest. (Queries that are in the index find
   themselves first and flatter every approximate index.)
2. **Candidates within the memory budget.** ``max_bytes`` (``--max-index-memory 4G``): a candidate whose
   estimated size (:func:`~kitaeru.index.faiss_index.estimate_index_bytes`) is above it is skipped and
   listed under ``skipped``.
3. **The parameters that matter.** ivfpq: the number of lists (``nlist`` ≈ √N/2 and √N, so a probe
   scans a useful share of the data) and the code size (``pq_m`` = dim/4 and dim/2 sub-quantisers of
   4-bit SIMD fast-scan codes) are built (one coarse k-means per ``nlist``, shared by its code sizes);
   for each, ``nprobe`` grows and the smallest re-ranking depth ``k_factor`` that reaches the target is
   found, then timed. hnsw: the graph width ``M`` (32, and 16 only when 32 holds recall with a narrow
   search) is built and the smallest ``efSearch`` that reaches the target is timed. A sweep stops as
   soon as the curve turns down. Parameters the user gave are fixed, not searched.
   **Estimate before building.** Building a graph over millions of vectors costs far more than
   everything else here, so on large N each HNSW width is first tried on a pilot graph over
   ``HNSW_PILOT_N`` of the vectors (same held-out queries, truth over the pilot). A bigger graph needs
   at least the pilot's ``efSearch`` for the same recall and walks more of memory per query, so the
   pilot's speed is an upper bound: when it is not above the best candidate already measured (or the
   pilot cannot reach the target at all), the full graph is not built and is listed under
   ``skipped`` with the pilot's numbers and the estimated build time it saved.
4. **Speed** is single-thread, one query per call (what a server request sees), counted in queries per
   CPU second of the searching thread: other jobs on a shared machine disturb it far less than wall
   time. The wall-clock figure is kept beside it.
5. **The choice** is the point with the most queries/s among those at or above the target (flat when
   none is), rebuilt over all the vectors (ivfpq reuses its trained lists and codebooks). The report —
   the chosen point, every point measured (the curve), what was skipped and why — goes into
   ``X.index.json`` under ``params.auto`` and into ``kitaeru index build --json``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np

from kitaeru.core.console import info as say
from kitaeru.core.errors import ConfigError
from kitaeru.index import faiss_factory as fi
from kitaeru.index.evaluation import exact_search, recall_at, single_query_speed

AUTO_QUERIES = 500          # held-out queries (fewer for small N: a tenth of it)
SPEED_QUERIES = 200         # queries timed one by one per measured point
SPEED_BUDGET_S = 1.5        # wall seconds at most per timed point
K = 10
NPROBE_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
K_FACTOR_GRID = (4, 8, 16, 32, 64)
EF_GRID = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
HNSW_M_GRID = (32, 16)
HNSW_NARROW_EF = 64         # try the smaller graph only when M=32 holds recall at efSearch <= this
HNSW_PILOT_N = 20_000       # vectors in the pilot graph that bounds a full graph's speed
HNSW_PILOT_MIN_RATIO = 4    # a pilot pays only when the full graph is at least this many times larger


def held_out_split(n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(query rows, index rows)``: ``n_queries`` rows drawn at random, and every other row in order."""
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(n, n_queries, replace=False))
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return held, np.flatnonzero(keep)


def auto_queries(n: int) -> int:
    return min(AUTO_QUERIES, max(50, n // 10))


def ivfpq_grid(n: int, dim: int, own: Mapping[str, Any]) -> list[dict[str, int]]:
    """The (nlist, pq_m, pq_nbits) builds to try, smallest first; given values are kept fixed."""
    root = math.sqrt(n)
    cap = max(1, n // 39)
    nlists = [own["nlist"]] if "nlist" in own else sorted({max(1, min(cap, int(round(f * root)))) for f in (0.5, 1.0)})
    if "pq_m" in own:
        ms = [own["pq_m"]]
    else:
        ms = sorted({fi._largest_divisor_at_most(dim, max(1, dim // d), even=True) for d in (4, 2)})
    nbits = own.get("pq_nbits", 4)
    return [{"nlist": nl, "pq_m": m, "pq_nbits": nbits} for nl in nlists for m in ms]


class _Tuner:
    def __init__(self, train: np.ndarray, queries: np.ndarray, truth: np.ndarray, metric: str, n: int,
                 target: float, max_bytes: int | None):
        self.train, self.queries, self.truth, self.metric = train, queries, truth, metric
        self.n, self.dim = n, train.shape[1]
        self.target, self.max_bytes = target, max_bytes
        self.points: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.speed_queries = queries[:SPEED_QUERIES]

    def fits(self, index_type: str, params: Mapping[str, Any]) -> tuple[bool, int]:
        size = fi.estimate_index_bytes(index_type, self.n, self.dim, params)
        if self.max_bytes is not None and size > self.max_bytes:
            self.skipped.append({"type": index_type, "params": dict(params), "estimated_bytes": size,
                                 "reason": f"about {fi.format_bytes(size)} > --max-index-memory {fi.format_bytes(self.max_bytes)}"})
            return False, size
        return True, size

    def recall(self, index: Any, index_type: str, params: dict[str, Any], size: int) -> dict[str, Any]:
        _, found = index.search(self.queries, K)
        point = {"type": index_type, "params": dict(params), "recall_at_1": round(recall_at(found, self.truth, 1), 4),
                 "recall_at_10": round(recall_at(found, self.truth, K), 4), "estimated_bytes": size}
        self.points.append(point)
        return point

    def time(self, index: Any, point: dict[str, Any]) -> dict[str, Any]:
        speed = single_query_speed(index, self.speed_queries, K, budget_s=SPEED_BUDGET_S)
        point["qps_single_cpu"] = round(speed["cpu"], 1)
        point["qps_single"] = round(speed["wall"], 1)
        return point

    def holds(self, point: dict[str, Any]) -> bool:
        return point["recall_at_10"] >= self.target

    # ---- flat --------------------------------------------------------------------------------
    def flat(self) -> dict[str, Any] | None:
        ok, size = self.fits("flat", {})
        index = fi.make_faiss_index(self.train, "flat", self.metric, {})
        point = {"type": "flat", "params": {}, "recall_at_1": 1.0, "recall_at_10": 1.0, "estimated_bytes": size}
        self.time(index, point)
        if ok:
            self.points.append(point)
        return point if ok else {**point, "skipped": True}

    # ---- ivfpq -------------------------------------------------------------------------------
    def ivfpq(self, own: Mapping[str, Any]) -> tuple[dict[str, Any] | None, Any]:
        """The best ivfpq point (and its built index) over the grid, or (None, None)."""
        faiss = fi._faiss()
        best, best_index = None, None
        quantizers: dict[int, Any] = {}
        for build in ivfpq_grid(len(self.train), self.dim, own):
            params = fi.resolve_params("ivfpq", len(self.train), self.dim, {**build, "nprobe": 1, "k_factor": 1})
            ok, size = self.fits("ivfpq", params)
            if not ok:
                continue
            started = time.perf_counter()
            if params["nlist"] not in quantizers:  # trained by the first build of this nlist, reused after
                quantizers[params["nlist"]] = fi.flat_quantizer(self.dim, self.metric)
            index = fi.make_faiss_index(self.train, "ivfpq", self.metric, params, quantizer=quantizers[params["nlist"]])
            say(f"auto: ivfpq nlist={params['nlist']} pq_m={params['pq_m']} pq_nbits={params['pq_nbits']} "
                f"built in {time.perf_counter() - started:.1f}s; sweeping nprobe and k_factor")
            ivf, refine = faiss.extract_index_ivf(index), faiss.downcast_index(index)
            nlist = params["nlist"]
            nprobes = [own["nprobe"]] if "nprobe" in own else [p for p in NPROBE_GRID if p < nlist] + [nlist]
            factors = [own["k_factor"]] if "k_factor" in own else list(K_FACTOR_GRID)
            here = None
            for nprobe in nprobes:
                ivf.nprobe = min(nprobe, nlist)
                # the deepest re-ranking first: if even it misses the target, more lists are needed
                refine.k_factor = float(factors[-1])
                deepest = self.recall(index, "ivfpq", {**params, "nprobe": nprobe, "k_factor": factors[-1]}, size)
                if not self.holds(deepest):
                    continue
                hit = deepest
                for factor in factors[:-1]:
                    refine.k_factor = float(factor)
                    point = self.recall(index, "ivfpq", {**params, "nprobe": nprobe, "k_factor": factor}, size)
                    if self.holds(point):
                        hit = point
                        break
                refine.k_factor = float(hit["params"]["k_factor"])
                self.time(index, hit)
                if here is not None and hit["qps_single_cpu"] < here["qps_single_cpu"]:
                    break  # the curve turned down: more probes only cost
                here = hit
                if hit["params"]["k_factor"] == factors[0]:
                    break  # the shallowest re-ranking already holds: more probes only cost
            if here is not None and (best is None or here["qps_single_cpu"] > best["qps_single_cpu"]):
                best, best_index = here, index
            else:
                del index
        return best, best_index

    # ---- hnsw --------------------------------------------------------------------------------
    def hnsw(self, own: Mapping[str, Any], best_qps: float | None = None) -> dict[str, Any] | None:
        """The best HNSW point, or None; a width whose pilot cannot beat ``best_qps`` is never built."""
        best = None
        widths = [own["hnsw_m"]] if "hnsw_m" in own else list(HNSW_M_GRID)
        use_pilot = best_qps is not None and len(self.train) >= HNSW_PILOT_MIN_RATIO * HNSW_PILOT_N
        for m in widths:
            params = fi.resolve_params("hnsw", len(self.train), self.dim, {**own, "hnsw_m": m})
            ok, size = self.fits("hnsw", params)
            if not ok:
                continue
            if use_pilot:
                pilot = self.hnsw_pilot(params, own)
                bound = (best_qps if best is None else max(best_qps, best["qps_single_cpu"]))
                if pilot["qps_single_cpu"] is None or pilot["qps_single_cpu"] <= bound:
                    self.skip_hnsw(params, size, pilot, bound)
                    if pilot["ef_search"] is None or pilot["ef_search"] > HNSW_NARROW_EF:
                        break  # a smaller graph would need a still wider search
                    continue
            started = time.perf_counter()
            index = fi.make_faiss_index(self.train, "hnsw", self.metric, params)
            say(f"auto: hnsw M={m} built in {time.perf_counter() - started:.1f}s; sweeping efSearch")
            hit = self.sweep_ef(index, params, own, size, record=True)
            del index
            if hit is not None and (best is None or hit["qps_single_cpu"] > best["qps_single_cpu"]):
                best = hit
            if hit is None or hit["params"]["ef_search"] > HNSW_NARROW_EF:
                break  # a smaller graph would need a still wider search
        return best

    def sweep_ef(self, index: Any, params: dict[str, Any], own: Mapping[str, Any], size: int, *, record: bool,
                 queries: np.ndarray | None = None, truth: np.ndarray | None = None) -> dict[str, Any] | None:
        """The smallest efSearch reaching the target, timed; None when even the widest search misses."""
        queries = self.queries if queries is None else queries
        truth = self.truth if truth is None else truth
        for ef in ([own["ef_search"]] if "ef_search" in own else EF_GRID):
            index.hnsw.efSearch = int(ef)
            if record:
                point = self.recall(index, "hnsw", {**params, "ef_search": ef}, size)
            else:
                _, found = index.search(queries, K)
                point = {"type": "hnsw", "params": {**params, "ef_search": ef},
                         "recall_at_10": round(recall_at(found, truth, K), 4)}
            if self.holds(point):
                return self.time(index, point)
        return None

    def hnsw_pilot(self, params: dict[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
        """Speed and efSearch of the same graph over ``HNSW_PILOT_N`` sampled vectors (an upper bound)."""
        rows = np.sort(np.random.default_rng(1).choice(len(self.train), HNSW_PILOT_N, replace=False))
        sample = np.ascontiguousarray(self.train[rows])
        _, truth = exact_search(sample, self.queries, K, self.metric)
        started = time.perf_counter()
        index = fi.make_faiss_index(sample, "hnsw", self.metric, params)
        built = time.perf_counter() - started
        hit = self.sweep_ef(index, params, own, 0, record=False, truth=truth)
        del index
        n = len(self.train)
        # Insertion visits ~log(N) layers' worth of neighbours per vector: N log N from the pilot's rate.
        estimate = built * (n / HNSW_PILOT_N) * math.log(n) / math.log(HNSW_PILOT_N)
        return {"pilot_vectors": HNSW_PILOT_N, "pilot_build_seconds": round(built, 2),
                "estimated_build_seconds": round(estimate, 1),
                "ef_search": None if hit is None else hit["params"]["ef_search"],
                "recall_at_10": None if hit is None else hit["recall_at_10"],
                "qps_single_cpu": None if hit is None else hit["qps_single_cpu"]}

    def skip_hnsw(self, params: dict[str, Any], size: int, pilot: dict[str, Any], bound: float) -> None:
        if pilot["qps_single_cpu"] is None:
            reason = (f"a {pilot['pilot_vectors']}-vector pilot graph misses recall@10 {self.target} even at "
                      f"efSearch {EF_GRID[-1]}: the full graph would miss it too")
        else:
            reason = (f"a {pilot['pilot_vectors']}-vector pilot graph reaches recall@10 {self.target} at efSearch "
                      f"{pilot['ef_search']} with {pilot['qps_single_cpu']} queries/CPU s, not above the best "
                      f"candidate's {round(bound, 1)}: the full graph (slower still) cannot win")
        say(f"auto: hnsw M={params['hnsw_m']} not built ({reason}; about {pilot['estimated_build_seconds']}s of build saved)")
        self.skipped.append({"type": "hnsw", "params": dict(params), "estimated_bytes": size, "pilot": pilot,
                             "reason": reason})


def tune(vectors: np.ndarray, metric: str, overrides: Mapping[str, Any] | None = None, *,
         max_bytes: int | None = None, target: float | None = None) -> tuple[str, dict[str, Any], Any, dict[str, Any]]:
    """Choose, build and report the ``auto`` index over ``vectors`` → ``(type, params, faiss index, report)``."""
    target = fi.AUTO_MIN_RECALL if target is None else target
    n, dim = vectors.shape
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(fi.TUNABLE_PARAMS["ivfpq"]) - set(fi.TUNABLE_PARAMS["hnsw"]))
    if unknown:
        raise ConfigError(f"index parameter(s) {', '.join(unknown)} do not apply to --type auto")
    if "pq_m" in given and dim % int(given["pq_m"]):
        raise ConfigError(f"--pq-m {given['pq_m']}: must divide the dimension {dim}")
    if given and n < fi.AUTO_FLAT_MAX_N:  # the exact index takes none of them: say so rather than drop them
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in sorted(given.items()))
        raise ConfigError(f"{flags}: --type auto uses the exact flat index for {n} vectors (< {fi.AUTO_FLAT_MAX_N}), "
                          "which takes no parameters; give --type ivfpq or --type hnsw to use them")
    if n < fi.AUTO_FLAT_MAX_N:
        fi.check_memory("flat", n, dim, {}, max_bytes)
        report = {"reason": f"{n} vectors < {fi.AUTO_FLAT_MAX_N}: exact search is fast enough",
                  "target_recall_at_10": target, "min_recall_at_10": target, "candidates": [], "skipped": []}
        return "flat", {}, fi.make_faiss_index(vectors, "flat", metric, {}), report
    started = time.perf_counter()
    n_queries = auto_queries(n)
    held, kept = held_out_split(n, n_queries)
    queries, train = vectors[held], vectors[kept]
    _, truth = exact_search(train, queries, K, metric)
    say(f"auto: tuning on {len(train)} vectors with {n_queries} held-out queries (target recall@10 >= {target})")
    tuner = _Tuner(train, queries, truth, metric, n, target, max_bytes)
    flat = tuner.flat()
    ivfpq, ivfpq_index = tuner.ivfpq({k: v for k, v in given.items() if k in fi.TUNABLE_PARAMS["ivfpq"]})
    measured = [p["qps_single_cpu"] for p in (ivfpq, flat) if p is not None and not p.get("skipped")]
    hnsw = tuner.hnsw({k: v for k, v in given.items() if k in fi.TUNABLE_PARAMS["hnsw"]},
                      best_qps=max(measured) if measured else None)
    holding = [p for p in (ivfpq, hnsw) if p is not None]
    if not flat.get("skipped"):
        holding.append(flat)
    if not holding:
        raise ConfigError(
            f"--max-index-memory {fi.format_bytes(max_bytes or 0)}: no index over {n} x {dim} vectors fits and keeps "
            f"recall@10 >= {target} (flat needs about {fi.format_bytes(flat['estimated_bytes'])}; "
            "every kitaeru index keeps the float32 vectors for exact scores)")
    chosen = max(holding, key=lambda p: p["qps_single_cpu"])
    index_type, params = chosen["type"], dict(chosen["params"])
    if index_type == "ivfpq":
        ivfpq_index.reset()  # keep the trained lists and codebooks; index every vector, in order
        ivfpq_index.add(vectors)
        index = ivfpq_index
    else:
        index = fi.make_faiss_index(vectors, index_type, metric, params)
    flat_qps = flat["qps_single_cpu"]
    report = {
        "target_recall_at_10": target,
        "min_recall_at_10": target,
        "queries": n_queries,
        "queries_held_out": True,
        "speed": "single-thread queries per CPU second (qps_single_cpu); wall-clock qps_single beside it",
        "max_index_memory": max_bytes,
        "flat_qps_single_cpu": flat_qps,
        "chosen": {**chosen, "speedup_vs_flat": round(chosen["qps_single_cpu"] / max(flat_qps, 1e-9), 2)},
        "candidates": tuner.points,
        "skipped": tuner.skipped,
        "tuning_seconds": round(time.perf_counter() - started, 2),
    }
    say(f"auto: chose {index_type} {params} (recall@10 {chosen['recall_at_10']} on held-out queries, "
        f"{report['chosen']['speedup_vs_flat']}x flat single-thread queries/s)")
    return index_type, params, index, report
