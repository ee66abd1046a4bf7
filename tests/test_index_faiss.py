"""``kitaeru.index``: every index type, add, batch search, eval, auto, bad inputs (no models needed)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kitaeru.core.errors import ConfigError, DataError
from kitaeru.index import faiss_factory, faiss_index
from kitaeru.index.embeddings_io import EmbeddingInfo, make_table, read_embeddings, write_parquet
from kitaeru.index.evaluation import recall_at
from kitaeru.index.faiss_index import build_index, load_index, sidecar_paths


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """Faiss's OpenMP barriers crawl when the CPUs are shared (parallel CI jobs): these indexes are
    tiny, so one thread is both faster and steadier."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.25 * rng.normal(size=(n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered(2000, 32)


@pytest.fixture(scope="module")
def embeddings_parquet(tmp_path_factory, vectors) -> str:
    """An embed-format Parquet file (paths, sizes, model info) over the clustered vectors."""
    folder = tmp_path_factory.mktemp("emb")
    info = EmbeddingInfo(model="timm:vit_tiny_patch16_224", pretrained="none", pool="mean", image_size=32,
                         resize="crop", normalized=True, dim=32, kind="image")
    rows = [{"path": f"/data/img_{i:05d}.jpg", "width": 1600, "height": 900} for i in range(len(vectors))]
    path = folder / "e.parquet"
    write_parquet(make_table(vectors, rows, info), path)
    return str(path)


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivfpq"])
def test_every_type_finds_itself_and_survives_save_load(tmp_path, vectors, index_type):
    index = build_index(vectors, index_type=index_type, metric="ip")
    scores, ids = index.search(vectors[:50], k=10)
    assert ids.shape == scores.shape == (50, 10)
    top1 = (ids[:, 0] == np.arange(50)).mean()
    # flat and hnsw: exact self-retrieval; ivfpq re-ranks with exact distances, so it holds too here
    assert top1 == 1.0
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # ip scores come best first
    path = index.save(tmp_path / "x.faiss")
    faiss_path, meta_path, json_path = sidecar_paths(path)
    assert faiss_path.is_file() and meta_path.is_file() and json_path.is_file()
    info = json.loads(json_path.read_text())
    assert info["type"] == index_type and info["ntotal"] == 2000 and info["dim"] == 32
    loaded = load_index(path)
    assert loaded.info.params == index.info.params
    _, ids2 = loaded.search(vectors[:50], k=10)
    assert np.array_equal(ids, ids2)


def test_parameters_come_from_n_and_dim_and_can_be_overridden(vectors):
    params = faiss_index.default_params("ivfpq", 200_000, 768)
    assert params["nlist"] == int(round(4 * np.sqrt(200_000))) and 768 % params["pq_m"] == 0 and params["pq_nbits"] == 4
    small = faiss_index.default_params("ivfpq", 50, 768)
    assert small["nlist"] == 1 and 2 ** small["pq_nbits"] <= 50
    index = build_index(vectors, index_type="ivfpq", params={"nlist": 16, "nprobe": 4, "pq_m": 8, "k_factor": 4})
    assert index.info.params == {"nlist": 16, "pq_m": 8, "pq_nbits": 4, "nprobe": 4, "k_factor": 4}
    import faiss

    assert faiss.extract_index_ivf(index.index).nprobe == 4
    assert isinstance(faiss.downcast_index(faiss.extract_index_ivf(index.index)), faiss.IndexIVFPQFastScan)
    classic = build_index(vectors, index_type="ivfpq", params={"pq_nbits": 8})
    assert type(faiss.downcast_index(faiss.extract_index_ivf(classic.index))) is faiss.IndexIVFPQ
    hnsw = build_index(vectors, index_type="hnsw", params={"hnsw_m": 8, "ef_search": 20})
    assert hnsw.index.hnsw.efSearch == 20
    with pytest.raises(ConfigError, match="pq_m=5: must divide"):
        build_index(vectors, index_type="ivfpq", params={"pq_m": 5})
    with pytest.raises(ConfigError, match="do not apply to --type flat"):
        build_index(vectors, index_type="flat", params={"nlist": 4})


def test_ivfpq_reranking_keeps_recall_that_plain_pq_loses(vectors):
    from kitaeru.index.evaluation import evaluate_index

    reranked = evaluate_index(build_index(vectors, index_type="ivfpq", params={"nprobe": 8}), vectors[:200])
    no_rerank = evaluate_index(build_index(vectors, index_type="ivfpq", params={"nprobe": 8, "k_factor": 1}), vectors[:200])
    assert reranked["recall_at_10"] > no_rerank["recall_at_10"]
    assert reranked["recall_at_10"] >= 0.9


def test_l2_metric_and_add_without_rebuild(tmp_path, vectors):
    index = build_index(vectors[:1500], index_type="hnsw", metric="l2")
    scores, ids = index.search(vectors[:5], k=3)
    assert np.all(ids[:, 0] == np.arange(5)) and np.allclose(scores[:, 0], 0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) >= -1e-6)  # l2: distances grow down the list
    new_ids = index.add(vectors[1500:])
    assert new_ids[0] == 1500 and index.ntotal == 2000 and len(index.metadata) == 2000
    _, found = index.search(vectors[1990:], k=1)
    assert found[:, 0].tolist() == list(range(1990, 2000))


def test_auto_picks_flat_for_small_n_and_a_fast_type_that_keeps_recall(monkeypatch):
    small = clustered(500, 16)
    assert build_index(small, index_type="auto").info.type == "flat"
    monkeypatch.setattr(faiss_factory, "AUTO_FLAT_MAX_N", 1000)
    data = clustered(4000, 32, seed=1)
    index = build_index(data, index_type="auto")
    report = index.info.params["auto"]
    chosen = report["chosen"]
    assert chosen["type"] == index.info.type and chosen["recall_at_10"] >= 0.95
    assert {c["type"] for c in report["candidates"]} == {"flat", "ivfpq", "hnsw"}
    holding = [c for c in report["candidates"] if c["recall_at_10"] >= 0.95 and "qps_single_cpu" in c]
    assert chosen["qps_single_cpu"] == max(c["qps_single_cpu"] for c in holding)
    # the chosen search-time knobs are the ones the saved index uses
    assert {k: v for k, v in index.info.params.items() if k != "auto"} == chosen["params"]


def test_auto_tunes_on_held_out_queries_that_are_not_in_the_index(monkeypatch):
    from kitaeru.index import auto_tune

    monkeypatch.setattr(faiss_factory, "AUTO_FLAT_MAX_N", 1000)
    data = clustered(3000, 32, seed=3)
    built: list[np.ndarray] = []
    real = faiss_index.make_faiss_index

    def spy(vectors, *args, **kwargs):
        built.append(np.array(vectors))
        return real(vectors, *args, **kwargs)

    monkeypatch.setattr(faiss_factory, "make_faiss_index", spy)
    index = build_index(data, index_type="auto")
    held, kept = auto_tune.held_out_split(len(data), auto_tune.auto_queries(len(data)))
    assert len(held) == index.info.params["auto"]["queries"] == 300 and not set(held) & set(kept)
    tuning = built[:-1] if index.info.type != "ivfpq" else built  # the last build is the final index (ivfpq re-adds)
    assert tuning and all(len(v) == len(kept) for v in tuning)
    for vectors in tuning:  # no held-out query is among the vectors indexed while tuning
        nearest = (data[held] @ vectors.T).max(axis=1)
        assert nearest.max() < 1 - 1e-6
    # the final index holds every vector, in input order (id = row)
    assert index.ntotal == len(data) and np.array_equal(index.reconstruct_all(), data)


def test_auto_report_has_the_curve_and_respects_the_memory_budget(monkeypatch):
    monkeypatch.setattr(faiss_factory, "AUTO_FLAT_MAX_N", 1000)
    data = clustered(4000, 32, seed=2)
    n, dim = data.shape
    ivfpq = faiss_index.estimate_index_bytes("ivfpq", n, dim, {"nlist": 63, "pq_m": 16, "pq_nbits": 4})
    hnsw = faiss_index.estimate_index_bytes("hnsw", n, dim, {"hnsw_m": 16})
    assert ivfpq < hnsw
    budget = (ivfpq + hnsw) // 2
    index = build_index(data, index_type="auto", max_index_memory=budget)
    report = index.info.params["auto"]
    assert report["max_index_memory"] == budget and index.info.type != "hnsw"
    assert {c["type"] for c in report["candidates"]} == {"flat", "ivfpq"}
    assert {s["type"] for s in report["skipped"]} == {"hnsw"}
    assert all("max-index-memory" in s["reason"] and s["estimated_bytes"] > budget for s in report["skipped"])
    # the curve: ivfpq points over nprobe and k_factor, each with recall, the timed ones with speed
    curve = [c for c in report["candidates"] if c["type"] == "ivfpq"]
    assert len({(c["params"]["nprobe"], c["params"]["k_factor"]) for c in curve}) >= 2
    assert all(0 <= c["recall_at_10"] <= 1 and c["estimated_bytes"] <= budget for c in curve)
    assert any("qps_single_cpu" in c for c in curve) and report["chosen"]["speedup_vs_flat"] > 0
    # an explicit type over the budget is refused with both sizes; nothing at all fits: one line
    with pytest.raises(ConfigError, match="needs about .* more than"):
        build_index(data, index_type="hnsw", max_index_memory=budget)
    with pytest.raises(ConfigError, match="no index over 4000 x 32 vectors fits"):
        build_index(data, index_type="auto", max_index_memory="100K")
    assert faiss_index.parse_memory("4G") == 4 * 1024 ** 3 and faiss_index.parse_memory("512M") == 512 * 1024 ** 2
    assert faiss_index.parse_memory("1.5GB") == int(1.5 * 1024 ** 3) and faiss_index.parse_memory(None) is None
    with pytest.raises(ConfigError, match="not a size"):
        faiss_index.parse_memory("4X")


def test_recall_definition():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at(np.array([[1, 9, 3], [7, 8, 9]]), truth, 1) == 0.5
    assert recall_at(np.array([[3, 2, 1], [6, 0, -1]]), truth, 3) == pytest.approx(4 / 6)


def test_read_embeddings_layouts_and_bad_inputs(tmp_path, embeddings_parquet, vectors):
    emb = read_embeddings(embeddings_parquet)
    assert emb.vectors.shape == (2000, 32) and emb.info.model == "timm:vit_tiny_patch16_224"
    assert emb.metadata.column("id").to_pylist()[:3] == [0, 1, 2]
    assert emb.metadata.column("path")[1].as_py() == "/data/img_00001.jpg"
    # a folder of shards reads as one table, in name order
    shards = tmp_path / "shards"
    shards.mkdir()
    table = pq.read_table(embeddings_parquet)
    pq.write_table(table.slice(0, 700), shards / "part-00000.parquet")
    pq.write_table(table.slice(700), shards / "part-00001.parquet")
    (shards / "_summary.json").write_text("{}")
    folder = read_embeddings(shards)
    assert np.array_equal(folder.vectors, vectors) and folder.info.pool == "mean"
    # a bare .npy: row numbers are the ids, paths are empty
    np.save(tmp_path / "bare.npy", vectors[:10])
    bare = read_embeddings(tmp_path / "bare.npy")
    assert bare.metadata.column("path").null_count == 10 and bare.info.model is None
    np.save(tmp_path / "rank1.npy", vectors[0])
    with pytest.raises(DataError, match=r"expected a 2-D matrix .* got shape \(32,\)"):
        read_embeddings(tmp_path / "rank1.npy")
    np.save(tmp_path / "strings.npy", np.array([["a", "b"]]))
    with pytest.raises(DataError, match="expected numbers"):
        read_embeddings(tmp_path / "strings.npy")
    with pytest.raises(DataError, match="not found"):
        read_embeddings(tmp_path / "missing.parquet")
    pq.write_table(pa.table({"path": ["a"]}), tmp_path / "noemb.parquet")
    with pytest.raises(DataError, match="no 'embedding' column"):
        read_embeddings(tmp_path / "noemb.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .parquet files"):
        read_embeddings(tmp_path / "empty")


def test_cli_build_add_search_eval(cli, tmp_path, embeddings_parquet, vectors):
    out = tmp_path / "idx" / "scenes.faiss"
    r = cli("index", "build", "--embeddings", embeddings_parquet, "--index-out", out, "--type", "hnsw", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["type"] == "hnsw" and summary["ntotal"] == 2000 and summary["model"] == "timm:vit_tiny_patch16_224"
    meta = pq.read_table(out.with_suffix(".index.parquet"))
    assert meta.column("path")[5].as_py() == "/data/img_00005.jpg" and meta.column("width")[5].as_py() == 1600
    info = json.loads((tmp_path / "idx" / "scenes.index.json").read_text())
    assert info["pool"] == "mean" and info["image_size"] == 32 and info["params"]["hnsw_m"] == 32

    # batch search: (n, k) ids with the scores beside
    np.save(tmp_path / "q.npy", vectors[[3, 14, 159]])
    r = cli("index", "search", "--index", out, "--queries", tmp_path / "q.npy", "--top-k", "4", "--out", tmp_path / "ids.npy")
    assert r.exit_code == 0, r.stderr
    ids, scores = np.load(tmp_path / "ids.npy"), np.load(tmp_path / "ids.scores.npy")
    assert ids.shape == scores.shape == (3, 4) and ids[:, 0].tolist() == [3, 14, 159]

    # add more vectors from the same encoder without rebuilding
    more = tmp_path / "more.parquet"
    info_obj = read_embeddings(embeddings_parquet).info
    extra = clustered(10, 32, seed=7)
    write_parquet(make_table(extra, [{"path": f"/data/new_{i}.jpg", "width": 8, "height": 8} for i in range(10)], info_obj), more)
    r = cli("index", "add", "--index", out, "--embeddings", more, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["ntotal"] == 2010
    loaded = load_index(out)
    _, found = loaded.search(extra[:2], k=1)
    assert found[:, 0].tolist() == [2000, 2001]
    assert [row["path"] for row in loaded.rows(found[:, 0])] == ["/data/new_0.jpg", "/data/new_1.jpg"]

    r = cli("index", "eval", "--index", out, "--embeddings", embeddings_parquet, "--queries", "100", "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["queries"] == 100 and 0.9 <= result["recall_at_10"] <= 1.0 and result["recall_at_1"] >= 0.9
    assert result["qps_single"] > 0 and result["qps_batch"] > 0
    r = cli("index", "eval", "--index", out, "--queries", "50")
    assert r.exit_code == 0 and "recall_at_10" in r.stdout


def test_cli_every_type_and_bad_inputs(cli, tmp_path, vectors):
    np.save(tmp_path / "v.npy", vectors[:600])
    for index_type in ("flat", "ivfpq", "auto"):
        r = cli("index", "build", "--embeddings", tmp_path / "v.npy", "--index-out", tmp_path / f"{index_type}.faiss",
                "--type", index_type, "--metric", "l2", "--json")
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["type"] == ("flat" if index_type == "auto" else index_type)
    r = cli("index", "search", "--index", tmp_path / "flat.faiss", "--queries", tmp_path / "v.npy", "--top-k", "1",
            "--out", tmp_path / "self.npy")
    assert r.exit_code == 0 and np.array_equal(np.load(tmp_path / "self.npy")[:, 0], np.arange(600))
    # an index kept in a bucket: written when complete, loaded back through a local copy
    import fsspec

    try:
        r = cli("index", "build", "--embeddings", tmp_path / "v.npy", "--index-out", "memory://idx/v.faiss", "--type", "hnsw")
        assert r.exit_code == 0, r.stderr
        assert sorted(fsspec.filesystem("memory").ls("/idx", detail=False)) == [
            "/idx/v.faiss", "/idx/v.index.json", "/idx/v.index.parquet"]
        remote = load_index("memory://idx/v.faiss")
        assert remote.ntotal == 600 and remote.search(vectors[7], k=1)[1][0, 0] == 7
    finally:
        fsspec.filesystem("memory").rm("/idx", recursive=True)

    np.save(tmp_path / "rank3.npy", np.zeros((2, 3, 4), np.float32))
    np.save(tmp_path / "d16.npy", np.zeros((5, 16), np.float32))
    bad = [
        (("index", "build", "--embeddings", tmp_path / "rank3.npy", "--index-out", tmp_path / "a.faiss"), "2-D matrix"),
        (("index", "build", "--embeddings", tmp_path / "nope.npy", "--index-out", tmp_path / "a.faiss"), "not found"),
        (("index", "build", "--embeddings", tmp_path / "v.npy", "--index-out", tmp_path / "a.idx"), "must end in .faiss"),
        (("index", "build", "--embeddings", tmp_path / "v.npy", "--index-out", tmp_path / "a.faiss", "--type", "lsh"), "type"),
        (("index", "build", "--embeddings", tmp_path / "v.npy", "--index-out", tmp_path / "a.faiss", "--type", "hnsw",
          "--nlist", "8"), "do not apply"),
        (("index", "add", "--index", tmp_path / "flat.faiss", "--embeddings", tmp_path / "d16.npy"), "16-d vectors but the index holds 32-d"),
        (("index", "search", "--index", tmp_path / "flat.faiss", "--queries", tmp_path / "d16.npy", "--out", tmp_path / "o.npy"),
         "dimension 16"),
        (("index", "search", "--index", tmp_path / "flat.faiss", "--queries", tmp_path / "v.npy"), "needs --out"),
        (("index", "search", "--index", tmp_path / "flat.faiss", "--text", "a red car"), "does not record the model"),
        (("index", "search", "--index", tmp_path / "flat.faiss"), "exactly one of"),
        (("index", "search", "--index", tmp_path / "missing.faiss", "--text", "x"), "not found"),
        (("index", "eval", "--index", tmp_path / "v.npy"), "expected a .faiss file"),
    ]
    for args, message in bad:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_cli_overrides_aliases_and_json(cli, tmp_path, vectors):
    np.save(tmp_path / "v.npy", vectors[:800])
    # key=value overrides (and --set) reach the same fields as the flags; the guides' spellings still work
    r = cli("index", "build", "-e", tmp_path / "v.npy", "-o", tmp_path / "i.faiss", "--type", "ivfpq", "nlist=8",
            "pq_m=8", "--set", "nprobe=4", "k_factor=2", "--json")
    assert r.exit_code == 0, r.stderr
    built = json.loads(r.stdout)
    assert built["type"] == "ivfpq" and built["params"] == {"nlist": 8, "pq_m": 8, "pq_nbits": 4, "nprobe": 4, "k_factor": 2}
    r = cli("index", "build", "--embeddings", tmp_path / "v.npy", "--index-out", tmp_path / "h.faiss", "type=hnsw",
            "ef_search=40", "--max-index-memory", "1G", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["params"]["ef_search"] == 40
    # evaluate and its alias eval print the same result as JSON
    for name in ("evaluate", "eval"):
        r = cli("index", name, "--index", tmp_path / "h.faiss", "--queries", "20", "seed=3", "--json")
        assert r.exit_code == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["queries"] == 20 and result["type"] == "hnsw" and result["qps_single_cpu"] > 0
    np.save(tmp_path / "q.npy", vectors[:2])
    r = cli("index", "search", "-i", tmp_path / "h.faiss", "--queries", tmp_path / "q.npy", "--out", tmp_path / "o.npy",
            "top_k=3", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["k"] == 3 and np.load(tmp_path / "o.npy").shape == (2, 3)
    bad = [
        (("index", "build", "-e", tmp_path / "v.npy", "-o", tmp_path / "x.faiss", "--max-index-memory", "4X"), "not a size"),
        (("index", "build", "-e", tmp_path / "v.npy", "-o", tmp_path / "x.faiss", "--type", "hnsw", "--max-index-memory", "10K"),
         "more than the"),
        (("index", "build", "-e", tmp_path / "v.npy", "-o", tmp_path / "x.faiss", "nprobes=4"), "did you mean nprobe"),
        (("index", "evaluate", "--index", tmp_path / "h.faiss", "--queries", "0"), "queries"),
    ]
    for args, message in bad:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
