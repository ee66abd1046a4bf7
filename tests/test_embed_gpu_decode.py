"""``kitaeru embed`` decodes JPEGs on the GPU on CUDA, with the CPU path for everything else.

The batching, routing and fallback logic is the same code whatever decodes the JPEGs, so here it runs
with torchvision's CPU JPEG decoder standing in for nvJPEG (the choice of device is the only
difference); ``gpu`` tests run the real nvJPEG path on a CUDA machine and skip cleanly elsewhere.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kitaeru.index.embeddings_io import read_embeddings

TINY = ["--model", "timm:test_vit", "--pretrained", "none", "--image-size", "32", "--batch-size", "4", "--workers", "0"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_compute_thread):
    """One torch thread: steadier on a shared machine (see conftest)."""


@pytest.fixture(scope="module")
def mixed(shared_data, tmp_path_factory) -> Path:
    """Real JPEGs plus every kind of file the GPU decoder must hand to the CPU path."""
    root = tmp_path_factory.mktemp("mixed")
    for path in sorted((shared_data / "coco8" / "images" / "train").glob("*.jpg"))[:3]:
        shutil.copy(path, root / path.name)
    photo = Image.open(sorted((shared_data / "coco8" / "images" / "val").glob("*.jpg"))[0]).convert("RGB")
    photo.save(root / "as_png.png")
    photo.convert("CMYK").save(root / "cmyk.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90°: nvJPEG ignores EXIF, PIL applies it
    photo.save(root / "rotated.jpg", quality=90, exif=exif)
    good = io.BytesIO()
    photo.save(good, format="JPEG", quality=90)
    data = good.getvalue()
    # A valid header, then scan data torn apart: the header reads, the decoders fail.
    (root / "torn.jpg").write_bytes(data[:600] + bytes(range(256)) * 8)
    return root


def _vectors(out: Path) -> dict[str, np.ndarray]:
    emb = read_embeddings(out)
    return dict(zip(emb.metadata.column("path").to_pylist(), emb.vectors))


def _summary(out: Path) -> dict:
    return json.loads(out.with_name(out.stem + ".summary.json").read_text())


def test_the_choice_of_decoder(monkeypatch):
    from kitaeru.recipes.embed import gpu_decode
    from kitaeru.recipes.embed.gpu_batches import use_gpu_decode

    assert not use_gpu_decode(True, "cpu") and not use_gpu_decode(True, "mps")
    monkeypatch.setattr(gpu_decode, "gpu_decode_available", lambda device="cuda": True)
    assert use_gpu_decode(True, "cuda") and use_gpu_decode(True, "cuda:1")
    assert not use_gpu_decode(False, "cuda")  # --no-gpu-decode
    monkeypatch.setattr(gpu_decode, "gpu_decode_available", lambda device="cuda": False)
    assert not use_gpu_decode(True, "cuda")  # a torchvision without nvJPEG: the CPU path


def test_cpu_device_keeps_the_cpu_decoder(cli, mixed, tmp_path):
    r = cli("embed", "--image-dir", mixed, "--out", tmp_path / "cpu.parquet", "--device", "cpu", *TINY)
    assert r.exit_code == 0, r.stderr
    decode = _summary(tmp_path / "cpu.parquet")["decode"]
    assert decode == {"decoder": "cpu", "gpu_decoded": 0, "cpu_fallbacks": 0}


def test_batched_jpeg_path_routes_falls_back_and_matches_the_cpu_path(cli, mixed, tmp_path, monkeypatch):
    r = cli("embed", "--image-dir", mixed, "--out", tmp_path / "cpu.parquet", "--device", "cpu", *TINY)
    assert r.exit_code == 0, r.stderr
    from kitaeru.recipes.embed import gpu_batches

    # The GPU path on the CPU: batched decode_jpeg by torchvision instead of nvJPEG, nothing else changes.
    monkeypatch.setattr(gpu_batches, "use_gpu_decode", lambda wanted, device: wanted)
    r = cli("embed", "--image-dir", mixed, "--out", tmp_path / "jpeg.parquet", "--device", "cpu", *TINY)
    assert r.exit_code == 0, r.stderr
    summary = _summary(tmp_path / "jpeg.parquet")
    # 3 plain JPEGs batched; PNG, CMYK and the EXIF-rotated JPEG read by the workers on the CPU; the
    # torn JPEG fails the batched decode, is retried on the CPU and is skipped with the CPU's reason.
    assert summary["decode"]["gpu_decoded"] == 3 and summary["decode"]["cpu_fallbacks"] == 1
    assert summary["decode"]["decoder"].startswith("gpu")
    cpu_summary = _summary(tmp_path / "cpu.parquet")
    assert summary["embedded"] == cpu_summary["embedded"] == 6
    assert [s["path"] for s in summary["skipped_inputs"]["items"]] == [str(mixed / "torn.jpg")]
    assert summary["skipped_inputs"]["items"] == cpu_summary["skipped_inputs"]["items"]
    got, cpu = _vectors(tmp_path / "jpeg.parquet"), _vectors(tmp_path / "cpu.parquet")
    assert list(got) == list(cpu)  # same rows, same order
    for path, vector in cpu.items():
        similarity = float(got[path] @ vector)
        # CPU-routed files are decoded identically; batched JPEGs differ by the decode scale and resize
        # (at this 32 px input libjpeg decodes at 1/8 scale first), and this random ViT magnifies it
        assert similarity > (0.9999 if Path(path).name in ("as_png.png", "cmyk.jpg", "rotated.jpg") else 0.95), path
    rows = read_embeddings(tmp_path / "jpeg.parquet").metadata.to_pylist()
    rotated = next(r for r in rows if r["path"].endswith("rotated.jpg"))
    stored = Image.open(mixed / "rotated.jpg").size
    assert (rotated["width"], rotated["height"]) == stored[::-1]  # the displayed (EXIF-rotated) size
    r = cli("embed", "--image-dir", mixed, "--out", tmp_path / "off.parquet", "--device", "cpu", "--no-gpu-decode", *TINY)
    assert r.exit_code == 0 and _summary(tmp_path / "off.parquet")["decode"]["decoder"] == "cpu"


def test_batched_pixels_match_the_cpu_preprocessing_at_model_size(shared_data):
    """At a real model's 224 px input, the batched decode + resize gives the CPU path's pixels."""
    from functools import partial

    import torch

    from kitaeru.models.image_encoders import create_image_encoder, preprocess
    from kitaeru.recipes.embed.data import load_item
    from kitaeru.recipes.embed.gpu_batches import decode_batch, read_item

    encoder = create_image_encoder("timm:test_vit", pretrained=None, image_size=224)
    transform = partial(preprocess, size=224, mean=encoder.mean, std=encoder.std, resize="crop")
    paths = [str(p) for p in sorted((shared_data / "coco8" / "images" / "train").glob("*.jpg"))]
    batch = decode_batch([read_item(p, transform, 224) for p in paths], encoder, "cpu", transform)
    reference = torch.stack([load_item(p, transform, 224)["tensor"] for p in paths])
    assert batch["gpu_decoded"] == len(paths) and batch["pixels"].shape == reference.shape
    # mean |difference| in normalised units (÷ std ≈ 0.27): 0.03 is about 2/255 of the pixel range
    assert float((batch["pixels"] - reference).abs().mean()) < 0.03


@pytest.mark.gpu
def test_nvjpeg_on_cuda_matches_the_cpu_decoder(cli, mixed, tmp_path):
    for name, flag in (("gpu", "--gpu-decode"), ("cpu", "--no-gpu-decode")):
        r = cli("embed", "--image-dir", mixed, "--out", tmp_path / f"{name}.parquet", "--device", "cuda", flag, *TINY)
        assert r.exit_code == 0, r.stderr
    decode = _summary(tmp_path / "gpu.parquet")["decode"]
    assert decode["decoder"].startswith("gpu") and decode["gpu_decoded"] == 3
    got, cpu = _vectors(tmp_path / "gpu.parquet"), _vectors(tmp_path / "cpu.parquet")
    assert list(got) == list(cpu) and min(float(got[p] @ cpu[p]) for p in cpu) > 0.95
