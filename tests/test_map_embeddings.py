"""``kitaeru map`` over embed outputs: PNG, interactive HTML and JSON, sampling, UMAP options, errors.

The inputs are written with the embed output writers (``kitaeru.index.embeddings_io``) over real
image paths from ../shared/data, with vectors in three well-separated clusters so the map's
geometry can be checked. UMAP's numba compilation (~15-30 s) is paid once for the module.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

N_PER_CLUSTER = 20
CLUSTERS = ("alpha", "beta", "gamma")


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def _unescape(html_text: str) -> str:
    return html_text.replace("\\u002f", "/").replace("\\u003c", "<").replace("\\u003e", ">")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, shared_data):
    """The same 60 clustered vectors as a Parquet file, a folder of shards, .npy + .meta.parquet and a bare .npy."""
    import pyarrow as pa

    from kitaeru.index.embeddings_io import EmbeddingInfo, make_table, meta_path_for_npy, write_parquet

    root = tmp_path_factory.mktemp("map_inputs")
    images = sorted(str(p) for p in shared_data.rglob("*.jpg"))
    assert len(images) >= 10
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(CLUSTERS), 32)) * 6
    vectors = np.concatenate([c + rng.normal(size=(N_PER_CLUSTER, 32)) for c in centres]).astype(np.float32)
    labels = [name for name in CLUSTERS for _ in range(N_PER_CLUSTER)]
    rows = [{"path": images[i % len(images)], "width": 100 + i, "height": 50} for i in range(len(vectors))]
    info = EmbeddingInfo(model="open_clip:ViT-S-32", pretrained="none", pool="mean", image_size=224, dim=32, kind="image")
    table = make_table(vectors, rows, info).append_column("cluster", pa.array(labels))
    parquet = root / "emb.parquet"
    write_parquet(table, parquet)
    shards = root / "shards"
    write_parquet(table.slice(0, 25), shards / "part-00000.parquet")
    write_parquet(table.slice(25), shards / "part-00001.parquet")
    npy = root / "emb.npy"
    np.save(npy, vectors)
    write_parquet(make_table(vectors, rows, info, with_embedding=False).append_column("cluster", pa.array(labels)),
                  meta_path_for_npy(npy))
    bare = root / "bare.npy"
    np.save(bare, vectors)
    return {"root": root, "parquet": parquet, "shards": shards, "npy": npy, "bare": bare, "vectors": vectors,
            "labels": labels, "paths": [r["path"] for r in rows]}


@pytest.fixture(scope="module")
def full_map(inputs):
    """One full run through the real CLI: PNG + HTML + JSON, coloured by cluster."""
    from kitaeru.cli import run

    out = inputs["root"] / "out"
    files = {"png": out / "map.png", "html": out / "map.html", "json": out / "coords.json"}
    code = run(["map", "--embeddings", str(inputs["parquet"]), "--out", str(files["png"]), "--html", str(files["html"]),
                "--json-out", str(files["json"]), "--color-by", "cluster", "--thumbnails", "12", "--title", "test map"])
    assert code == 0
    return files


def test_png_is_a_real_scatter_plot(full_map):
    width, height = _png_size(full_map["png"])
    assert (width, height) == (1500, 1200)  # 10×8 inches at 150 dpi
    assert full_map["png"].stat().st_size > 20_000  # points, legend and axes, not an empty canvas


def test_json_has_one_coordinate_pair_per_point(full_map, inputs):
    doc = json.loads(full_map["json"].read_text())
    assert doc["format"] == "kitaeru-map/1"
    assert doc["n_points"] == len(doc["points"]) == doc["total_points"] == len(inputs["vectors"])
    assert doc["sampled"] is False
    assert doc["umap"] == {"n_components": 2, "n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "random_state": 42}
    assert doc["color_by"] == "cluster"
    assert [p["id"] for p in doc["points"]] == list(range(len(inputs["vectors"])))
    assert [p["label"] for p in doc["points"]] == inputs["paths"]
    assert [p["color"] for p in doc["points"]] == inputs["labels"]
    xy = np.array([[p["x"], p["y"]] for p in doc["points"]])
    assert np.isfinite(xy).all() and xy.std(axis=0).min() > 0
    # the three clusters stay apart in 2-D: every point is nearer its own cluster's centre
    labels = np.array(inputs["labels"])
    centres = np.stack([xy[labels == c].mean(axis=0) for c in CLUSTERS])
    nearest = np.argmin(((xy[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (np.array(CLUSTERS)[nearest] == labels).mean() == 1.0


def test_html_is_plotly_with_hover_texts_and_thumbnails(full_map, inputs):
    page = _unescape(full_map["html"].read_text(encoding="utf-8"))
    assert "plotly" in page.lower() and "Plotly.newPlot" in page
    assert "plotly_hover" in page  # the thumbnail script
    for path in inputs["paths"][:5]:
        assert f"<b>{path}</b>" in page
    assert "cluster: beta" in page and "width: 101" in page
    assert page.count("data:image/jpeg;base64,") == 12  # --thumbnails 12
    for name in CLUSTERS:
        assert f"{name} ({N_PER_CLUSTER})" in page  # legend entries with counts
    assert "test map" in page


def test_sample_shards_and_umap_options(cli, inputs, tmp_path):
    out = tmp_path / "coords.json"
    r = cli("map", "--embeddings", inputs["shards"], "--out", tmp_path / "m.png", "--json-out", out, "--sample", "24",
            "--n-neighbors", "5", "--min-dist", "0.5", "--metric", "euclidean", "--random-state", "7", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["points"] == 24 and summary["total_points"] == 60 and summary["sampled"] is True
    doc = json.loads(out.read_text())
    assert doc["umap"] == {"n_components": 2, "n_neighbors": 5, "min_dist": 0.5, "metric": "euclidean", "random_state": 7}
    ids = [p["id"] for p in doc["points"]]
    assert len(ids) == len(set(ids)) == 24 and ids == sorted(ids) and max(ids) < 60
    assert all(p["label"] == inputs["paths"][p["id"]] for p in doc["points"])
    assert (tmp_path / "m.png").is_file() and not (tmp_path / "m.html").exists()
    # the same seed gives the same layout
    again = tmp_path / "again.json"
    assert cli("map", "--embeddings", inputs["shards"], "--out", tmp_path / "m2.png", "--json-out", again, "--sample", "24",
               "--n-neighbors", "5", "--min-dist", "0.5", "--metric", "euclidean", "--random-state", "7").exit_code == 0
    assert json.loads(again.read_text())["points"] == doc["points"]


def test_remote_input_through_fsspec(cli, inputs, tmp_path):
    """An s3://-style URL, here fsspec's in-memory filesystem: the shards are read from there."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for shard in sorted(inputs["shards"].glob("*.parquet")):
        fs.pipe(f"/map-test/shards/{shard.name}", shard.read_bytes())
    out = tmp_path / "remote.json"
    r = cli("map", "--embeddings", "memory://map-test/shards", "--out", tmp_path / "r.png", "--json-out", out,
            "--sample", "15")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["n_points"] == 15 and doc["total_points"] == 60 and doc["source"] == "memory://map-test/shards"


def test_npy_inputs_and_the_point_cap(cli, inputs, tmp_path):
    out = tmp_path / "c.json"
    r = cli("map", "--embeddings", inputs["npy"], "--out", tmp_path / "m.png", "--json-out", out, "--max-points", "30",
            "--color-by", "width")
    assert r.exit_code == 0, r.stderr
    assert "more than --max-points 30" in r.stderr
    doc = json.loads(out.read_text())
    assert doc["n_points"] == 30 and doc["total_points"] == 60 and doc["sampled"] is True
    assert all(p["color"] == 100 + p["id"] for p in doc["points"])  # numeric column, colour bar
    bare = tmp_path / "bare.json"
    assert cli("map", "--embeddings", inputs["bare"], "--out", tmp_path / "b.png", "--json-out", bare).exit_code == 0
    doc = json.loads(bare.read_text())
    assert doc["n_points"] == 60 and doc["points"][3]["label"] == "#3"


def test_bad_map_arguments_are_one_line_errors(cli, inputs, tmp_path):
    png = str(tmp_path / "m.png")
    cases = [
        (("map", "--out", png), "exactly one of --embeddings or --output-dir"),
        (("map", "--embeddings", inputs["parquet"], "--output-dir", tmp_path, "--out", png), "exactly one"),
        (("map", "--embeddings", tmp_path / "missing.parquet", "--out", png), "not found"),
        (("map", "--embeddings", inputs["parquet"], "--out", tmp_path / "m.jpg"), "must end in .png"),
        (("map", "--embeddings", inputs["parquet"], "--out", png, "--html", tmp_path / "m.txt"), "must end in .html"),
        (("map", "--embeddings", inputs["parquet"], "--out", png, "--color-by", "weather"), "available: cluster"),
        (("map", "--embeddings", inputs["parquet"], "--out", png, "--metric", "no-such-metric"), "--metric"),
        (("map", "--embeddings", inputs["parquet"], "--out", png, "--n-neighbors", "1"), "n_neighbors"),
        (("map", "--embeddings", inputs["parquet"], "--out", png, "--sample", "0"), "sample"),
    ]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    cases.append((("map", "--embeddings", broken, "--out", png), "cannot read as Parquet"))
    for args, message in cases:
        r = cli(*args)
        assert r.exit_code == 2, (args, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not Path(png).exists()  # nothing written half-way
