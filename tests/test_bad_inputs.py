"""A table of bad inputs across every command: each is exit 2 with one line naming the file or
setting, no traceback, nothing written, and no run folder for a run that never started."""

from __future__ import annotations

import os

import numpy as np
import pytest

# (args, text the one line must contain); {t} is the test's folder with the fixtures below.
CASES = [
    # -- missing inputs
    (["embed", "--image-dir", "{t}/missing", "--out", "{t}/out/e.parquet"], "--image-dir"),
    (["embed", "--texts", "{t}/missing.txt", "--out", "{t}/out/e.parquet"], "--texts"),
    (["index", "build", "--embeddings", "{t}/missing.parquet", "--index-out", "{t}/out/x.faiss"], "missing.parquet"),
    (["index", "search", "--index", "{t}/missing.faiss", "--text", "a"], "missing.faiss"),
    (["map", "--embeddings", "{t}/missing.parquet", "--out", "{t}/out/m.png"], "missing.parquet"),
    (["docclass", "export", "--checkpoint", "{t}/missing.ckpt", "--out", "{t}/out/m.onnx"], "missing.ckpt"),
    (["docclass", "evaluate", "--model", "{t}/missing.ckpt", "--templates", "{t}/empty"], "missing.ckpt"),
    (["docclass", "register", "--model", "{t}/missing.onnx", "--templates", "{t}/empty", "--out", "{t}/out/b.npz"], "missing.onnx"),
    (["docclass", "classify", "--model", "{t}/missing.onnx", "--bank", "{t}/notes.txt", "--image", "{t}/notes.txt"], "missing.onnx"),
    (["docclass", "train", "--data-dir", "{t}/missing", "--output-dir", "{t}/runs"], "missing"),
    (["docclass", "train", "--resume", "{t}/empty", "--output-dir", "{t}/runs"], "--resume"),
    (["lora", "prepare", "--images", "{t}/missing", "--output-dir", "{t}/out/d"], "--images"),
    (["lora", "train", "--data-dir", "{t}/missing", "--output-dir", "{t}/runs"], "missing"),
    (["multimodal", "train", "--data-dir", "{t}/missing", "--output-dir", "{t}/runs/mm"], "missing"),
    (["multimodal", "search", "--output-dir", "{t}/missing", "--text", "a"], "missing"),
    (["serve", "--output-dir", "{t}/missing"], "missing"),
    (["runs", "--runs", "{t}/missing"], "--runs"),
    # -- output paths that cannot be written (parent is a file)
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/afile/e.parquet"], "is a file"),
    (["index", "build", "--embeddings", "{t}/afile", "--index-out", "{t}/afile/x.faiss"], "is a file"),
    (["index", "add", "--index", "{t}/afile", "--embeddings", "{t}/afile", "--out", "{t}/afile/x2.faiss"], "is a file"),
    (["map", "--embeddings", "{t}/afile", "--out", "{t}/afile/m.png"], "is a file"),
    (["map", "--embeddings", "{t}/afile", "--out", "{t}/out/m.png", "--html", "{t}/afile/m.html"], "is a file"),
    (["docclass", "export", "--checkpoint", "{t}/afile", "--out", "{t}/afile/m.onnx"], "is a file"),
    (["docclass", "register", "--model", "{t}/afile", "--templates", "{t}/empty", "--out", "{t}/afile/b.npz"], "is a file"),
    (["lora", "prepare", "--images", "{t}/empty", "--output-dir", "{t}/afile/d"], "is a file"),
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet"], "no images found"),
    # -- numbers
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/afile", "--image", "{t}/afile", "--threshold", "nan"], "threshold"),
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/afile", "--image", "{t}/afile", "--threshold", "1.5"], "threshold"),
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/afile", "--image", "{t}/afile", "--threshold", "inf"], "threshold"),
    (["index", "search", "--index", "{t}/afile", "--text", "a", "--top-k", "0"], "top_k"),
    (["index", "search", "--index", "{t}/afile", "--text", "a", "--top-k", "20000000"], "top_k"),
    (["index", "search", "--index", "{t}/afile", "--text", "a", "--top-k", "many"], "top-k"),
    (["multimodal", "search", "--output-dir", "{t}/empty", "--text", "a", "--top-k", "0"], "top_k"),
    (["multimodal", "train", "--use-sample-data", "--epochs", "0", "--output-dir", "{t}/runs/mm"], "epochs"),
    (["multimodal", "train", "--use-sample-data", "--learning-rate", "-1", "--output-dir", "{t}/runs/mm"], "learning_rate"),
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet", "--limit", "0"], "limit"),
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet", "--batch-size", "0"], "batch_size"),
    (["lora", "train", "--data-dir", "{t}/empty", "--output-dir", "{t}/runs", "--epochs", "-1"], "epochs"),
    # -- wrong kinds of files
    (["docclass", "export", "--checkpoint", "{t}/notes.txt", "--out", "{t}/out/m.onnx"], "notes.txt"),
    (["docclass", "export", "--checkpoint", "{t}/evil.ckpt", "--out", "{t}/out/m.onnx"], "--trust-checkpoint"),
    (["index", "search", "--index", "{t}/notes.faiss", "--text", "a"], "notes.index.parquet"),
    (["index", "build", "--embeddings", "{t}/e.parquet", "--index-out", "{t}/out/x.index"], ".faiss"),
    (["map", "--embeddings", "{t}/notes.txt", "--out", "{t}/out/m.png"], "notes.txt"),
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/vectors.npy", "--image", "{t}/afile"], "not a docclass bank"),
    (["docclass", "classify", "--model", "{t}/afile", "--bank", "{t}/notes.txt", "--image", "{t}/afile"], "not a docclass bank"),
    (["docclass", "evaluate", "--model", "{t}/notes.txt", "--templates", "{t}/empty"], "notes.txt"),
    # -- unknown keys, choices, combinations
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet", "poool=mean"], "poool"),
    (["embed", "--image-dir", "{t}/empty", "--out", "{t}/out/e.parquet", "--pool", "max"], "pool"),
    (["index", "build", "--embeddings", "{t}/afile", "--index-out", "{t}/out/x.faiss", "--type", "lsh"], "type"),
    (["index", "search", "--index", "{t}/afile"], "--text"),
    (["map", "--embeddings", "{t}/afile", "--output-dir", "{t}/empty"], "exactly one"),
    (["docclass", "train", "--cfg-name", "no_such_preset"], "no_such_preset"),
    (["docclass", "train", "--config", "{t}/notes.txt"], "notes.txt"),
    (["runs", "--runs", "{t}/empty", "--status", "zombie"], "status"),
    # -- detect: checkpoints that run code, outputs under a file, devices, numbers
    (["detect", "train", "-d", "{t}/afile", "--model", "{t}/evil.pt", "-o", "{t}/out"], "--trust-checkpoint"),
    (["detect", "val", "-d", "{t}/afile", "--model", "{t}/evil.pt", "-o", "{t}/out"], "--trust-checkpoint"),
    (["detect", "predict", "--model", "{t}/evil.pt", "--source", "{t}/empty", "-o", "{t}/out"], "--trust-checkpoint"),
    (["detect", "export", "--model", "{t}/evil.pt", "--output", "{t}/out/m.onnx"], "--trust-checkpoint"),
    (["detect", "train", "-d", "{t}/missing.yaml", "-o", "{t}/out"], "--data-dir"),
    (["detect", "train", "-d", "{t}/afile", "-o", "{t}/afile/runs"], "is a file"),
    (["detect", "val", "-d", "{t}/afile", "--model", "{t}/evil.pt", "-o", "{t}/afile/runs"], "is a file"),
    (["detect", "export", "--model", "{t}/evil.pt", "--output", "{t}/afile/m.onnx"], "is a file"),
    (["detect", "train", "-d", "{t}/afile", "-o", "{t}/out", "--device", "gpu0"], "--device"),
    (["detect", "train", "-d", "{t}/afile", "-o", "{t}/out", "--epochs", "0"], "epochs"),
    (["detect", "train", "--resume", "{t}/empty", "-o", "{t}/out"], "--resume"),
    (["detect", "predict", "--model", "{t}/evil.pt", "--source", "{t}/missing", "-o", "{t}/out"], "--source"),
    (["detect", "predict", "--model", "{t}/notes.txt", "--source", "{t}/empty", "-o", "{t}/out"], "notes.txt"),
    (["detect", "predict", "--model", "{t}/evil.pt", "--source", "{t}/empty", "--conf", "2"], "conf"),
]


@pytest.fixture
def bad_world(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "notes.txt").write_text("not a model, not an image\n: [")
    (tmp_path / "notes.faiss").write_text("not an index")
    np.save(tmp_path / "vectors.npy", np.zeros((3, 4), np.float32))
    (tmp_path / "e.parquet").write_bytes(b"PAR1")
    import torch

    class Code:
        def __reduce__(self):
            return (open, (str(tmp_path / "marker"), "w"))

    torch.save({"payload": Code()}, tmp_path / "evil.ckpt")
    torch.save({"epoch": 1, "model": Code()}, tmp_path / "evil.pt")  # an Ultralytics-looking .pt
    return tmp_path


def _snapshot(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files} | {
        os.path.relpath(os.path.join(d, s), root) for d, subs, _ in os.walk(root) for s in subs}


def test_the_table_has_at_least_forty_bad_inputs():
    assert len(CASES) >= 40


@pytest.mark.parametrize("args,names", CASES, ids=[" ".join(c[0][:2]) + f" #{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, names, bad_world, cli):
    before = _snapshot(bad_world)
    result = cli(*[a.format(t=bad_world) for a in args])
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert names in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert _snapshot(bad_world) == before, "a refused command left files behind"
    assert not (bad_world / "marker").exists()


@pytest.mark.parametrize("args", [
    ["map", "--embeddings", "{t}/afile", "--out", "{t}/afile/m.png"],
    ["embed", "--image-dir", "{t}/empty", "--out", "{t}/afile/e.parquet"],
    ["multimodal", "search", "--output-dir", "{t}/missing", "--text", "a"],
    ["docclass", "export", "--checkpoint", "{t}/afile", "--out", "{t}/afile/m.onnx"],
    ["detect", "train", "-d", "{t}/missing.yaml", "-o", "{t}/out"],
    ["detect", "train", "-d", "{t}/afile", "-o", "{t}/afile/runs"],
])
def test_refusals_come_in_under_two_seconds(args, bad_world, cli_subprocess):
    """A fresh process (imports included): the checks run before any heavy library is imported."""
    import time

    started = time.perf_counter()
    result = cli_subprocess(*[a.format(t=bad_world) for a in args], timeout=60)
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2 and result.stderr.startswith("error:"), result.stderr
    assert elapsed < 2.0 * float(os.environ.get("KITAERU_TIME_SCALE", "1")), f"{elapsed:.1f} s"
