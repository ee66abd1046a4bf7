"""embed → index → search end to end with an OpenCLIP model loaded from a local checkpoint the test
writes itself: image and text queries, text embeddings, and the weights really being the file's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kitaeru.index.embeddings_io import read_embeddings

ARCH = "ViT-S-32"
SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_compute_thread):
    """Every test of this module runs with one torch/Faiss thread (see conftest)."""


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory) -> Path:
    """A random-init OpenCLIP ViT-S-32 (64 px input) saved as a plain state dict."""
    import open_clip
    import torch

    torch.manual_seed(7)
    model = open_clip.create_model(ARCH, pretrained=None, force_image_size=SIZE)
    path = tmp_path_factory.mktemp("ckpt") / "clip_s32.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def scenes(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scenes")
    shutil.copytree(shared_data / "nuscenes-scene-0061" / "samples", root / "samples")
    for img in sorted((shared_data / "coco8" / "images" / "val").glob("*.jpg")):
        shutil.copy(img, root / img.name)
    return root


@pytest.fixture(scope="module")
def indexed(clip_checkpoint, scenes, tmp_path_factory) -> dict[str, Path]:
    from kitaeru.cli import run

    work = tmp_path_factory.mktemp("work")
    common = ["--model", f"open_clip:{ARCH}", "--pretrained", str(clip_checkpoint), "--image-size", str(SIZE), "--workers", "0"]
    assert run(["embed", "--image-dir", str(scenes), "--out", str(work / "img.parquet"), "--pool", "cls", *common]) == 0
    assert run(["index", "build", "--embeddings", str(work / "img.parquet"), "--index-out", str(work / "img.faiss"),
                "--type", "flat"]) == 0
    return {"emb": work / "img.parquet", "index": work / "img.faiss", "work": work, "common": common}


def test_local_openclip_checkpoint_weights_are_the_files(indexed, clip_checkpoint, scenes):
    import open_clip
    import torch

    from kitaeru.data.images import open_image
    from kitaeru.models.image_encoders import preprocess

    table = pq.read_table(indexed["emb"])
    assert len(table) == 10 and set(table.column("pretrained").to_pylist()) == {str(clip_checkpoint.resolve())}
    emb = read_embeddings(indexed["emb"])
    assert emb.vectors.shape == (10, 384) and emb.info.pool == "cls"
    # recompute one vector with OpenCLIP itself from the same state dict: identical
    model = open_clip.create_model(ARCH, pretrained=None, force_image_size=SIZE)
    model.load_state_dict(torch.load(clip_checkpoint, weights_only=True))
    model.eval()
    path = emb.metadata.column("path")[0].as_py()
    pixels = preprocess(open_image(path, min_side=SIZE), SIZE, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    with torch.inference_mode():
        direct = model.encode_image(pixels[None]).numpy()[0]
    assert np.allclose(direct / np.linalg.norm(direct), emb.vectors[0], atol=1e-4)


def test_search_by_image_finds_itself_and_text_queries_work(cli, indexed, scenes):
    query = next((scenes / "samples" / "CAM_FRONT").glob("*.jpg"))
    r = cli("index", "search", "--index", indexed["index"], "--image", query, "--top-k", "3", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    hits = json.loads(r.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"] == str(query.resolve()) and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert hits[0]["width"] == 1600 and hits[0]["height"] == 900
    r = cli("index", "search", "--index", indexed["index"], "--text", "a truck at an intersection", "--top-k", "5")
    assert r.exit_code == 0, r.stderr
    assert "rank" in r.stdout and "inner product" in r.stdout and r.stdout.count(str(scenes)[:20]) >= 1


def test_text_embeddings_share_the_format_and_the_space(cli, indexed, tmp_path):
    from kitaeru.index.embeddings_io import make_table, write_parquet

    texts = tmp_path / "captions.txt"
    texts.write_text("a truck at an intersection\n\nparked cars\na van turning left\n", encoding="utf-8")
    r = cli("embed", "--texts", texts, "--out", tmp_path / "t.npy", *indexed["common"])
    assert r.exit_code == 0, r.stderr
    meta = pq.read_table(tmp_path / "t.meta.parquet")
    assert meta.column("text").to_pylist() == ["a truck at an intersection", "parked cars", "a van turning left"]
    assert meta.column("path").null_count == 3 and np.load(tmp_path / "t.npy").shape == (3, 384)
    r = cli("index", "build", "--embeddings", tmp_path / "t.npy", "--index-out", tmp_path / "t.faiss", "--type", "hnsw")
    assert r.exit_code == 0, r.stderr
    # `index search --text` re-creates the encoder from t.index.json: the query lands on its own caption
    r = cli("index", "search", "--index", tmp_path / "t.faiss", "--text", "parked cars", "--top-k", "2", "--json")
    assert r.exit_code == 0, r.stderr
    hits = json.loads(r.stdout)
    assert hits[0]["text"] == "parked cars" and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # vectors of another model, or pooled differently, cannot be added to this index
    np.save(tmp_path / "other.npy", np.ones((2, 64), np.float32))
    r = cli("index", "add", "--index", tmp_path / "t.faiss", "--embeddings", tmp_path / "other.npy")
    assert r.exit_code == 2 and "64-d vectors but the index holds 384-d" in r.stderr
    other = read_embeddings(tmp_path / "t.npy").info
    assert other.pool == "mean"  # the seed's default, recorded for the image tower's queries
    other.pool = "cls"
    write_parquet(make_table(np.ones((1, 384), np.float32), [{"path": "x.jpg"}], other), tmp_path / "cls.parquet")
    r = cli("index", "add", "--index", tmp_path / "t.faiss", "--embeddings", tmp_path / "cls.parquet")
    assert r.exit_code == 2 and "pool=cls" in r.stderr and "pool=mean" in r.stderr
