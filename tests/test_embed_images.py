"""``kitaeru embed`` over real images (coco8 + nuScenes 1600×900 CAM JPEGs) with timm's tiny random-init test ViT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from kitaeru.index.embeddings_io import read_embeddings

TINY = ["--model", "timm:test_vit", "--pretrained", "none", "--image-size", "32", "--batch-size", "4"]
DIM = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_compute_thread):
    """Every test of this module runs with one torch/Faiss thread (see conftest)."""


@pytest.fixture(scope="module")
def images(shared_data, tmp_path_factory) -> Path:
    """14 real images in nested folders: 8 COCO (640×~480) and 6 nuScenes cameras (1600×900)."""
    root = tmp_path_factory.mktemp("images")
    shutil.copytree(shared_data / "coco8" / "images", root / "coco")
    shutil.copytree(shared_data / "nuscenes-scene-0061" / "samples", root / "nuscenes")
    return root


def run_cli(*args) -> None:
    from kitaeru.cli import run

    assert run([str(a) for a in args]) == 0


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """One complete run (parallel decode workers) that the other tests compare against."""
    out = tmp_path_factory.mktemp("ref") / "e.parquet"
    run_cli("embed", "--image-dir", images, "--out", out, "--workers", "2", *TINY)
    return out


def by_path(path) -> dict[str, np.ndarray]:
    emb = read_embeddings(path)
    return dict(zip(emb.metadata.column("path").to_pylist(), emb.vectors))


def test_parquet_output_rows_and_summary(reference, images):
    table = pq.read_table(reference)
    assert table.column_names == ["path", "width", "height", "embedding", "model", "pretrained", "pool"]
    assert str(table.schema.field("embedding").type) == f"fixed_size_list<element: float>[{DIM}]"
    rows = table.drop_columns(["embedding"]).to_pylist()
    assert len(rows) == 14
    paths = [r["path"] for r in rows]
    assert paths == sorted(paths) and all(Path(p).is_absolute() and Path(p).is_file() for p in paths)
    cams = [r for r in rows if "CAM_" in r["path"]]
    assert len(cams) == 6 and all((r["width"], r["height"]) == (1600, 900) for r in cams)
    assert {(r["model"], r["pretrained"], r["pool"]) for r in rows} == {("timm:test_vit", "none", "mean")}
    vectors = read_embeddings(reference).vectors
    assert vectors.shape == (14, DIM) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert len({v.tobytes() for v in vectors}) == 14  # different images, different vectors
    summary = json.loads(reference.with_name("e.summary.json").read_text())
    assert summary["embedded"] == 14 and summary["rows_in_output"] == 14 and summary["skipped_inputs"]["count"] == 0
    assert summary["workers"] == 2 and summary["image_size"] == 32 and summary["items_per_second"] > 0
    assert summary["config"]["image_dir"] == str(images.resolve())


def test_config_file_with_flags_on_top(cli, images, tmp_path):
    config = tmp_path / "embed.yaml"
    config.write_text("model: timm:test_vit\npretrained: none\nimage_size: 48\npool: cls\nresize: pad\nworkers: 0\n")
    r = cli("embed", "--config", config, "--image-dir", images, "--out", tmp_path / "c.parquet", "--limit", "1",
            "--image-size", "32", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert (summary["image_size"], summary["pool"], summary["resize"], summary["embedded"]) == (32, "cls", "pad", 1)
    config.write_text("model: timm:test_vit\nbatch_sise: 4\n")
    r = cli("embed", "--config", config, "--image-dir", images, "--out", tmp_path / "d.parquet")
    assert r.exit_code == 2 and "batch_sise: unknown key" in r.stderr


def test_npy_folder_outputs_and_no_normalize_match_the_reference(cli, reference, images, tmp_path):
    r = cli("embed", "--image-dir", images, "--out", tmp_path / "v.npy", "--workers", "0", "--no-normalize", *TINY)
    assert r.exit_code == 0, r.stderr
    matrix = np.load(tmp_path / "v.npy")
    meta = pq.read_table(tmp_path / "v.meta.parquet")
    assert matrix.shape == (14, DIM) and matrix.dtype == np.float32 and len(meta) == 14
    assert "embedding" not in meta.column_names and meta.column("width").to_pylist() == pq.read_table(reference).column("width").to_pylist()
    norms = np.linalg.norm(matrix, axis=1)
    assert not np.allclose(norms, 1)
    # the seeded random init makes every run the same model: normalised raw vectors = the reference
    assert np.allclose(matrix / norms[:, None], read_embeddings(reference).vectors, atol=1e-5)

    r = cli("embed", "--image-dir", images, "--out", tmp_path / "shards", "--shard-size", "4", "--workers", "0", *TINY)
    assert r.exit_code == 0, r.stderr
    parts = sorted(p.name for p in (tmp_path / "shards").glob("part-*.parquet"))
    assert parts == [f"part-{i:05d}.parquet" for i in range(4)]
    assert [len(pq.read_table(tmp_path / "shards" / p)) for p in parts] == [4, 4, 4, 2]
    assert (tmp_path / "shards" / "_summary.json").is_file()
    assert np.allclose(read_embeddings(tmp_path / "shards").vectors, read_embeddings(reference).vectors, atol=1e-6)


def test_cls_and_mean_pooling_differ_with_the_right_size(cli, reference, images, tmp_path):
    r = cli("embed", "--image-dir", images, "--out", tmp_path / "cls.parquet", "--pool", "cls", "--limit", "3",
            "--workers", "0", *TINY)
    assert r.exit_code == 0, r.stderr
    cls = by_path(tmp_path / "cls.parquet")
    mean = by_path(reference)
    assert len(cls) == 3 and set(pq.read_table(tmp_path / "cls.parquet").column("pool").to_pylist()) == {"cls"}
    for path, vector in cls.items():
        assert vector.shape == (DIM,) and not np.allclose(vector, mean[path], atol=1e-3)


def test_resume_after_a_limit_and_after_an_interruption(cli, reference, images, tmp_path, monkeypatch):
    expected = by_path(reference)
    # a partial job (--limit), then --resume does the rest
    out = tmp_path / "part.parquet"
    assert cli("embed", "--image-dir", images, "--out", out, "--limit", "5", "--workers", "0", *TINY).exit_code == 0
    assert len(pq.read_table(out)) == 5
    r = cli("embed", "--image-dir", images, "--out", out, "--resume", "--workers", "0", "--json", *TINY)
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["already_embedded"] == 5 and summary["embedded"] == 9 and summary["rows_in_output"] == 14
    got = by_path(out)
    assert len(pq.read_table(out)) == 14 and set(got) == set(expected)
    assert all(np.allclose(got[p], expected[p], atol=1e-6) for p in got)

    # an interrupted job (Ctrl-C during the third batch) keeps its shards; --resume finishes it
    from kitaeru.models import image_encoders

    real_encode = image_encoders.ImageEncoder.encode
    calls = {"n": 0}

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_encode(self, batch)

    monkeypatch.setattr(image_encoders.ImageEncoder, "encode", interrupted)
    out = tmp_path / "killed.npy"
    args = ["embed", "--image-dir", images, "--out", out, "--workers", "0", *TINY, "--batch-size", "2", "--shard-size", "3"]
    r = cli(*args)
    assert r.exit_code == 130
    command = r.stderr.split("resume with: ", 1)[1].replace("\n", " ").strip()
    assert command.startswith("kitaeru embed --image-dir") and command.endswith("--resume") and "--shard-size 3" in command
    assert not out.exists()
    kept = sorted((tmp_path / "killed.npy.parts").glob("part-*.parquet"))
    assert sum(len(pq.read_table(p)) for p in kept) == 4  # both finished batches survived, buffered rows included
    monkeypatch.setattr(image_encoders.ImageEncoder, "encode", real_encode)
    r = cli(*command.split()[1:], "--json")  # the printed command, as printed
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["already_embedded"] == 4
    got = by_path(out)
    assert np.load(out).shape == (14, DIM) and set(got) == set(expected)
    assert all(np.allclose(got[p], expected[p], atol=1e-6) for p in got)
    assert not (tmp_path / "killed.npy.parts").exists()

    # resuming with other settings would mix two spaces in one file
    r = cli("embed", "--image-dir", images, "--out", out, "--resume", "--pool", "cls", "--workers", "0", *TINY)
    assert r.exit_code == 2 and "--resume" in r.stderr and "pool=mean" in r.stderr


def test_remote_input_and_output_through_fsspec(cli, shared_data, reference, tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    cams = sorted((shared_data / "nuscenes-scene-0061" / "samples").glob("CAM_FRONT*/*.jpg"))
    for cam in cams:
        fs.pipe(f"/bucket/nuscenes/samples/{cam.parent.name}/{cam.name}", cam.read_bytes())
    try:
        r = cli("embed", "--image-dir", "memory://bucket/nuscenes/samples", "--out", "memory://bucket/vectors/e.parquet",
                "--workers", "2", "--json", *TINY)
        assert r.exit_code == 0, r.stderr
        assert json.loads(r.stdout)["files"] == ["memory://bucket/vectors/e.parquet"]
        assert fs.exists("/bucket/vectors/e.summary.json")
        emb = read_embeddings("memory://bucket/vectors/e.parquet")
        paths = emb.metadata.column("path").to_pylist()
        assert len(paths) == 3 and all(p.startswith("memory://") and "bucket/nuscenes/samples/CAM_FRONT" in p for p in paths)
        assert emb.metadata.column("width").to_pylist() == [1600] * 3
        local = by_path(reference)
        for path, vector in zip(paths, emb.vectors):  # same pixels, same model → same vector as the local run
            twin = next(p for p in local if p.endswith(path.rsplit("/", 1)[-1]))
            assert np.allclose(vector, local[twin], atol=1e-6)
    finally:
        fs.rm("/bucket", recursive=True)


def test_corrupt_images_are_skipped_counted_and_listed(cli, shared_data, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted((shared_data / "coco8" / "images" / "val").glob("*.jpg"))[:2]
    for g in good:
        shutil.copy(g, folder / g.name)
    (folder / "truncated.jpg").write_bytes(good[0].read_bytes()[:2000])
    (folder / "notes.png").write_text("not an image")
    r = cli("embed", "--image-dir", folder, "--out", tmp_path / "m.parquet", "--workers", "0", *TINY)
    assert r.exit_code == 0, r.stderr
    assert len(pq.read_table(tmp_path / "m.parquet")) == 2
    skipped = json.loads((tmp_path / "m.summary.json").read_text())["skipped_inputs"]
    assert skipped["count"] == 2
    assert sorted(Path(i["path"]).name for i in skipped["items"]) == ["notes.png", "truncated.jpg"]
    assert all("cannot read image" in i["reason"] and "BytesIO" not in i["reason"] for i in skipped["items"])
    assert "skipped inputs (2)" in r.stdout and "warning: skipped" in r.stderr


def test_local_timm_checkpoint_is_loaded(cli, images, reference, tmp_path):
    import timm
    import torch

    torch.manual_seed(123)
    model = timm.create_model("test_vit", num_classes=0, img_size=32)
    torch.save(model.state_dict(), tmp_path / "tiny.pt")
    r = cli("embed", "--image-dir", images, "--out", tmp_path / "ck.parquet", "--limit", "2", "--workers", "0",
            *TINY, "--pretrained", tmp_path / "tiny.pt")
    assert r.exit_code == 0, r.stderr
    table = pq.read_table(tmp_path / "ck.parquet")
    assert set(table.column("pretrained").to_pylist()) == {str((tmp_path / "tiny.pt").resolve())}
    got, seeded = by_path(tmp_path / "ck.parquet"), by_path(reference)
    assert all(not np.allclose(v, seeded[p], atol=1e-3) for p, v in got.items())


def test_bad_inputs_give_one_line_errors(cli, images, tmp_path, shared_data):
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    out = tmp_path / "o.parquet"
    cases = [
        (("--image-dir", tmp_path / "missing", "--out", out, *TINY), "not found or not a folder"),
        (("--image-dir", tmp_path / "empty", "--out", out, *TINY), "no images found"),
        (("--image-dir", tmp_path / "broken", "--out", out, *TINY), "none of the 1 input(s) could be embedded"),
        (("--image-dir", images, "--out", out, *TINY, "--model", "timm:no_such_net_xyz"), "unknown timm model"),
        (("--image-dir", images, "--out", out, *TINY, "--model", "open_clip:No-Such-ViT"), "unknown OpenCLIP model"),
        (("--image-dir", images, "--out", out, *TINY, "--pool", "max"), "pool"),
        (("--image-dir", images, "--out", out, *TINY, "--resize", "stretch"), "resize"),
        (("--image-dir", images, "--out", tmp_path / "o.txt", *TINY), "expected X.parquet, X.npy or a folder"),
        (("--out", out, *TINY), "exactly one input"),
        (("--image-dir", images, "--text", "a car", "--out", out, *TINY), "exactly one input"),
        (("--text", "a car", "--out", out, *TINY), "has no text tower"),
        (("--image-dir", images, "--out", out, *TINY, "--pretrained", tmp_path / "nope.pt"), "not found"),
        (("--image-dir", images, "--out", out, *TINY, "--batch-size", "0"), "batch_size"),
    ]
    for args, message in cases:
        r = cli("embed", *args)
        assert r.exit_code == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr.replace("\n", " "), (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not out.exists() and not (tmp_path / "o.parquet.parts").exists()
    # a folder output that already holds shards is not overwritten silently
    shards = tmp_path / "shards"
    assert cli("embed", "--image-dir", images, "--out", shards, "--limit", "1", "--workers", "0", *TINY).exit_code == 0
    r = cli("embed", "--image-dir", images, "--out", shards, "--limit", "1", "--workers", "0", *TINY)
    assert r.exit_code == 2 and "already holds embedding shards" in r.stderr


@pytest.mark.gpu
def test_cuda_path_bf16_channels_last_matches_cpu(cli, images, reference, tmp_path):
    r = cli("embed", "--image-dir", images, "--out", tmp_path / "g.parquet", "--device", "cuda", "--workers", "2", *TINY)
    assert r.exit_code == 0, r.stderr
    got, cpu = by_path(tmp_path / "g.parquet"), by_path(reference)
    assert set(got) == set(cpu)
    assert min(float(got[p] @ cpu[p]) for p in cpu) > 0.99  # bf16 autocast: close to, not equal to, fp32


def test_print_config_presets_and_overrides(cli, tmp_path):
    import yaml

    r = cli("embed", "--cfg-name", "nuscenes_vitl14", "--image-dir", tmp_path, "--out", tmp_path / "e.parquet",
            "--print-config")
    assert r.exit_code == 0, r.stderr
    config = yaml.safe_load(r.stdout)
    assert config["batch_size"] == 64 and config["model"] == "vit_l_14" and config["pool"] == "mean"
    # flags over the preset, key=value (guides' spellings accepted) over the flags
    r = cli("embed", "--cfg-name", "nuscenes_vitl14", "--data-dir", tmp_path, "-o", tmp_path / "e.npy", "--batch-size", "16",
            "batch=32", "pool=cls", "--imgsz", "96", "--print-config")
    assert r.exit_code == 0, r.stderr
    config = yaml.safe_load(r.stdout)
    assert (config["batch_size"], config["pool"], config["image_size"], config["image_dir"]) == (32, "cls", 96, str(tmp_path))
    r = cli("embed", "--image-dir", tmp_path, "--out", tmp_path / "e.npy", "pools=cls")
    assert r.exit_code == 2 and "did you mean pool" in r.stderr


def test_a_wrong_path_fails_before_any_model_loads(tmp_path):
    """A missing --image-dir (embed) or --embeddings (index) is reported before torch/Faiss load
    (checked by what the process imported, which no busy machine can change)."""
    from guards import kitaeru_with_import_probe

    cases = [
        (("embed", "--image-dir", tmp_path / "missing", "--out", tmp_path / "e.parquet"), "not found or not a folder"),
        (("index", "build", "--embeddings", tmp_path / "missing.npy", "--index-out", tmp_path / "i.faiss"), "not found"),
    ]
    for args, message in cases:
        r, heavy = kitaeru_with_import_probe(*args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not heavy, (args, sorted(heavy))
