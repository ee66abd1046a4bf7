"""The GPU code paths, each proven on a real CUDA device (``gpu`` tests skip without one).

Device tier and free memory, the free-memory batch formula against a real allocator cap, bf16
autocast and channels-last in the image encoders, pinned-memory loading with non-blocking copies
(``kitaeru embed`` on CUDA gives the CPU's vectors), TF32, Lightning ``bf16-mixed`` through
``trainer_device_kwargs``, and nvJPEG decoding against the CPU decoder. ``benchmarks/gpu/check.sh``
runs these on the GPU host; the CPU fallback of ``kitaeru.recipes.embed.gpu_decode`` is tested everywhere.
"""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import torch
from PIL import Image

gpu = pytest.mark.gpu


def jpeg_bytes(width: int, height: int, seed: int = 0, *, mode: str = "RGB", subsampling: int = 2) -> bytes:
    """A camera-like JPEG: smooth colour fields plus fine texture."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 255, size=(6, 8, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    noise = rng.integers(-20, 20, size=(height, width, 1), dtype=np.int16)
    image = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90, **({"subsampling": subsampling} if mode == "RGB" else {}))
    return buf.getvalue()


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


# ---- everywhere: the CPU fallback the dry run relies on -------------------------------------------
def test_cpu_fallback_decodes_resizes_and_names_bad_files(tmp_path):
    from kitaeru.core.errors import DataError
    from kitaeru.recipes.embed.gpu_decode import JpegBatchDecoder, decode_jpegs, gpu_decode_available

    assert not gpu_decode_available("cpu")
    paths = []
    for i, (w, h) in enumerate([(160, 90), (160, 90), (90, 160)]):
        paths.append(tmp_path / f"f{i}.jpg")
        paths[-1].write_bytes(jpeg_bytes(w, h, seed=i))
    images = decode_jpegs([as_tensor(p.read_bytes()) for p in paths], "cpu")
    assert [tuple(im.shape) for im in images] == [(3, 90, 160), (3, 90, 160), (3, 160, 90)]
    assert images[0].dtype == torch.uint8
    # the same pixels as PIL's decoder (both libjpeg), within rounding of the colour conversion
    pil = torch.from_numpy(np.array(Image.open(paths[0]).convert("RGB"))).permute(2, 0, 1)
    assert (images[0].int() - pil.int()).abs().float().mean() < 1.5

    decoder = JpegBatchDecoder(64, device="cpu", dtype=torch.bfloat16, channels_last=True)
    batch = decoder(paths)
    assert batch.shape == (3, 3, 64, 64) and batch.dtype == torch.bfloat16
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(batch.float()).all()
    padded = JpegBatchDecoder(64, device="cpu", resize="pad")(paths[:1])
    assert padded.shape == (1, 3, 64, 64)

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="broken.jpg"):
        decoder([paths[0], bad])


# ---- on a CUDA GPU -------------------------------------------------------------------------------
@gpu
def test_device_tier_and_free_memory_are_read_from_the_gpu():
    from kitaeru.core.device import GpuTier, resolve_device, tier_from_memory

    torch.cuda.empty_cache()
    info = resolve_device("cuda")
    free, total = torch.cuda.mem_get_info()
    assert info.tier is tier_from_memory(info.total_gb) and info.tier is not GpuTier.CPU
    assert abs(info.total_gb - total / 1024**3) < 0.05
    assert abs(info.free_gb - free / 1024**3) < 1.0
    assert info.bf16 == torch.cuda.is_bf16_supported()
    block = torch.empty(3 * 1024**3, dtype=torch.uint8, device="cuda")  # 3 GiB really taken
    try:
        after = resolve_device("cuda")
        assert info.free_gb - after.free_gb > 2.5
    finally:
        del block
        torch.cuda.empty_cache()


def _train_step(model: torch.nn.Module, batch: int, side: int = 128) -> None:
    x = torch.randn(batch, 3, side, side, device="cuda")
    loss = model(x).float().square().mean()
    loss.backward()
    model.zero_grad(set_to_none=True)


@gpu
def test_free_memory_batch_formula_fits_under_a_real_memory_cap():
    """The batch the formula picks for a budget trains inside that budget; four times it does not."""
    import torchvision

    from kitaeru.core.resources import batch_from_free_memory

    model = torchvision.models.resnet18(num_classes=10).cuda()
    peaks = {}
    for b in (16, 32):
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _train_step(model, b)
        torch.cuda.synchronize()
        peaks[b] = (torch.cuda.max_memory_allocated() - base) / 1024**2
    per_sample_mb = (peaks[32] - peaks[16]) / 16
    overhead_gb = max(0.0, peaks[16] - 16 * per_sample_mb) / 1024 + torch.cuda.memory_allocated() / 1024**3
    budget_gb = 6.0
    batch = batch_from_free_memory(budget_gb, overhead_gb, per_sample_mb, hi=4096)
    assert batch >= 32, (per_sample_mb, overhead_gb)
    total = torch.cuda.get_device_properties(0).total_memory
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(budget_gb * 1024**3 / total)
    try:
        _train_step(model, batch)  # fits: the formula keeps 15 % headroom
        torch.cuda.synchronize()
        with pytest.raises(torch.OutOfMemoryError):
            _train_step(model, 4 * batch)  # the cap is real
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        gc.collect()
        torch.cuda.empty_cache()


@gpu
@pytest.mark.parametrize("name", ["torchvision:mobilenet_v3_small", "timm:vit_tiny_patch16_224"])
def test_image_encoder_runs_bf16_autocast_on_channels_last_input(name):
    from kitaeru.models.image_encoders import create_image_encoder

    encoder = create_image_encoder(name, pretrained="none", device="cuda")
    seen = {}

    def first_layer(module, inputs, output):
        if "input" not in seen:
            seen["input"] = inputs[0]
            seen["output_dtype"] = output.dtype

    layer = next(m for m in encoder.module.modules() if isinstance(m, (torch.nn.Conv2d,)))
    handle = layer.register_forward_hook(first_layer)
    try:
        out = encoder.encode(torch.randn(4, 3, encoder.image_size, encoder.image_size))
    finally:
        handle.remove()
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert seen["output_dtype"] == expected  # autocast is on around the model
    assert seen["input"].is_contiguous(memory_format=torch.channels_last)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and torch.isfinite(out).all()


@gpu
def test_embed_on_cuda_pins_memory_and_matches_cpu_vectors(tmp_path, cli, monkeypatch):
    """Pinned host batches, non-blocking copies: the CUDA vectors are the CPU vectors (bf16 tolerance)."""
    import torch.utils.data._utils.pin_memory as pin_module

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        (folder / f"frame_{i}.jpg").write_bytes(jpeg_bytes(320, 180, seed=i))
    pinned = []
    original = pin_module.pin_memory

    def counting_pin_memory(data, *args, **kwargs):
        pinned.append(1)
        return original(data, *args, **kwargs)

    monkeypatch.setattr(pin_module, "pin_memory", counting_pin_memory)
    vectors = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.npy"
        r = cli("embed", "--image-dir", folder, "--out", out, "--model", "timm:vit_tiny_patch16_224", "--pretrained", "none",
                "--image-size", 64, "--batch-size", 4, "--workers", 1, "--device", device)
        assert r.exit_code == 0, r.stderr
        vectors[device] = np.load(out)
    assert pinned, "the CUDA run never pinned a batch"
    a, b = vectors["cpu"], vectors["cuda"]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert a.shape == b.shape and cos.min() > 0.99


@gpu
def test_tf32_is_enabled_once_a_cuda_device_is_resolved():
    from kitaeru.core.device import resolve_device

    resolve_device("cuda")
    assert torch.backends.cuda.matmul.allow_tf32, "fp32 matmuls on CUDA should use TF32 tensor cores"
    assert torch.backends.cudnn.allow_tf32


@gpu
def test_lightning_trains_bf16_mixed_through_trainer_device_kwargs():
    import lightning as L

    from kitaeru.core.device import resolve_device
    from kitaeru.core.lightning import quiet_lightning, trainer_device_kwargs

    device = resolve_device("cuda")
    kwargs = trainer_device_kwargs(device)
    assert kwargs["accelerator"] == "gpu"
    assert kwargs["precision"] == ("bf16-mixed" if device.bf16 else "16-mixed")
    seen = []

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(32, 8)

        def training_step(self, batch, _):
            out = self.layer(batch[0])
            seen.append((out.dtype, out.device.type))
            return out.float().square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 32)), batch_size=8)
    with quiet_lightning():
        trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, **kwargs)
        trainer.fit(Tiny(), data)
    expected = torch.bfloat16 if device.bf16 else torch.float16
    assert seen and all(s == (expected, "cuda") for s in seen)


@gpu
def test_nvjpeg_batch_decode_matches_the_cpu_decoder():
    from kitaeru.core.errors import DataError
    from kitaeru.recipes.embed.gpu_decode import JpegBatchDecoder, decode_jpegs, gpu_decode_available

    assert gpu_decode_available("cuda")
    files = [jpeg_bytes(1600, 900, seed=1), jpeg_bytes(1600, 900, seed=2, subsampling=0),
             jpeg_bytes(640, 480, seed=3), jpeg_bytes(300, 200, seed=4, mode="L")]
    data = [as_tensor(f) for f in files]
    on_gpu = decode_jpegs(data, "cuda")
    on_cpu = decode_jpegs(data, "cpu")
    for g, c in zip(on_gpu, on_cpu):
        assert g.device.type == "cuda" and g.dtype == torch.uint8 and g.shape == c.shape and g.shape[0] == 3
        diff = (g.cpu().int() - c.int()).abs().float()
        assert diff.mean() < 1.5 and torch.quantile(diff.flatten()[:1_000_000], 0.99) <= 8
    gpu_batch = JpegBatchDecoder(224, device="cuda", dtype=torch.bfloat16, channels_last=True).decode(data)
    cpu_batch = JpegBatchDecoder(224, device="cpu").decode(data)
    assert gpu_batch.device.type == "cuda" and gpu_batch.is_contiguous(memory_format=torch.channels_last)
    assert (gpu_batch.float().cpu() - cpu_batch).abs().mean() < 0.03
    with pytest.raises(DataError, match="bad.jpg"):
        decode_jpegs([data[0], as_tensor(b"\xff\xd8 broken")], "cuda", names=["good.jpg", "bad.jpg"])
