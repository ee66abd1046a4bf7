"""``--type auto`` estimates an HNSW graph on a pilot sample before building it over every vector.

Speeds are made deterministic here (a fixed queries/s per index kind instead of a stopwatch), so the
tests check the decision and what was built, never how long anything took.
"""

from __future__ import annotations

import pytest

from kitaeru.index import auto_tune, faiss_factory, faiss_index
from kitaeru.index.faiss_index import build_index
from test_index_faiss import clustered  # the same clustered unit vectors


@pytest.fixture
def auto_setup(monkeypatch):
    """Small thresholds so a 4,000-vector set is 'large'; every build recorded as (type, rows)."""
    import faiss

    faiss.omp_set_num_threads(1)
    monkeypatch.setattr(faiss_factory, "AUTO_FLAT_MAX_N", 1000)
    monkeypatch.setattr(auto_tune, "HNSW_PILOT_N", 600)
    built: list[tuple[str, int]] = []
    real = faiss_index.make_faiss_index

    def spy(vectors, index_type, *args, **kwargs):
        built.append((index_type, len(vectors)))
        return real(vectors, index_type, *args, **kwargs)

    monkeypatch.setattr(faiss_factory, "make_faiss_index", spy)

    def speeds(hnsw_qps: float):
        def fake(index, queries, k, budget_s=3.0, warmup=3):
            index.search(queries[:2], k)  # still a real search of the real index
            kind = type(faiss.downcast_index(index)).__name__
            qps = hnsw_qps if "HNSW" in kind else (1000.0 if "Refine" in kind or "IVF" in kind else 10.0)
            return {"wall": qps, "cpu": qps}

        monkeypatch.setattr(auto_tune, "single_query_speed", fake)

    return built, speeds


def test_hnsw_that_cannot_beat_ivfpq_is_not_built(auto_setup):
    built, speeds = auto_setup
    speeds(hnsw_qps=50.0)  # even the small pilot graph is slower than the measured ivfpq
    data = clustered(4000, 32, seed=4)
    index = build_index(data, index_type="auto")
    report = index.info.params["auto"]
    kept = len(data) - report["queries"]
    assert index.info.type == "ivfpq"
    assert ("hnsw", 600) in built and ("hnsw", kept) not in built and ("hnsw", len(data)) not in built
    skipped = [s for s in report["skipped"] if s["type"] == "hnsw"]
    assert skipped and "pilot graph" in skipped[0]["reason"] and "cannot win" in skipped[0]["reason"]
    assert skipped[0]["pilot"]["pilot_vectors"] == 600 and skipped[0]["pilot"]["qps_single_cpu"] == 50.0
    assert skipped[0]["pilot"]["estimated_build_seconds"] >= 0
    assert "hnsw" not in {c["type"] for c in report["candidates"]}


def test_hnsw_whose_pilot_can_win_is_built_and_chosen(auto_setup):
    built, speeds = auto_setup
    speeds(hnsw_qps=5000.0)
    data = clustered(4000, 32, seed=4)
    index = build_index(data, index_type="auto")
    report = index.info.params["auto"]
    kept = len(data) - report["queries"]
    assert ("hnsw", 600) in built and ("hnsw", kept) in built
    assert index.info.type == "hnsw" and report["chosen"]["recall_at_10"] >= 0.95
    # the width that won was built; a narrower one only as fast as it is not worth a second full build
    widths = [s["params"]["hnsw_m"] for s in report["skipped"] if s["type"] == "hnsw"]
    assert report["chosen"]["params"]["hnsw_m"] not in widths


def test_no_pilot_when_the_set_is_not_much_larger_than_it(auto_setup, monkeypatch):
    built, speeds = auto_setup
    speeds(hnsw_qps=50.0)
    monkeypatch.setattr(auto_tune, "HNSW_PILOT_N", 2000)  # 4,000 vectors: a pilot would cost half a build
    data = clustered(4000, 32, seed=5)
    report = build_index(data, index_type="auto").info.params["auto"]
    assert all(rows != 2000 for kind, rows in built if kind == "hnsw")
    assert "hnsw" in {c["type"] for c in report["candidates"]}
