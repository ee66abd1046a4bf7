"""JPEG batches decoded on the GPU (nvJPEG), then resized and normalised there.

A 1600×900 camera frame costs a CPU core 10–15 ms to decode, so a fast GPU model (ViT-L/14 in bf16
on an H100/H200 embeds several thousand images a second) starves on CPU decoding long before its
own ceiling. ``torchvision.io.decode_jpeg(list_of_byte_tensors, device="cuda")`` decodes a whole
batch with nvJPEG; the resize, centre crop and normalisation that follow stay on the device, so the
only thing crossing PCIe is the compressed file (≈5–10× smaller than its pixels).

Without CUDA the same functions decode with torchvision's CPU decoder (libjpeg-turbo), so every
step runs (and is tested) on any machine. Files that are not baseline/progressive JPEGs (PNG, CMYK,
corrupt bytes) raise :class:`~kitaeru.core.errors.DataError` naming the file; callers that want
to keep going decode those on the CPU path instead (:func:`decode_jpegs` with ``device="cpu"``).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from kitaeru.core.errors import DataError

# The CLIP family's input statistics: the usual default for the ViTs this module feeds.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def gpu_decode_available(device: str | torch.device = "cuda") -> bool:
    """True when ``device`` is a CUDA device and this torchvision can decode JPEGs on it."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:  # pragma: no cover - torchvision is a core dependency
        return False
    return True


def read_bytes(paths: Sequence[str | os.PathLike], *, threads: int = 8) -> list[torch.Tensor]:
    """The files' raw bytes as 1-D uint8 tensors (threads: reads release the GIL)."""

    def one(path: str | os.PathLike) -> torch.Tensor:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: cannot read image file ({exc.strerror or type(exc).__name__})") from exc
        if not data:
            raise DataError(f"{path}: empty image file")
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)

    if threads <= 1 or len(paths) <= 1:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, paths))


def decode_jpegs(
    data: Sequence[torch.Tensor],
    device: str | torch.device = "cuda",
    *,
    names: Sequence[str] | None = None,
) -> list[torch.Tensor]:
    """Decode JPEG byte tensors to RGB ``uint8`` CHW tensors on ``device``, as one batch.

    On CUDA this is one batched nvJPEG call; elsewhere torchvision's CPU decoder does the same
    work. ``names`` (paths, say) only label the error when a file cannot be decoded.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    if not data:
        return []
    batch = [d if d.device.type == "cpu" else d.cpu() for d in data]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision >= 0.29 marks its image codecs deprecated
        try:
            if device.type == "cuda":
                return list(decode_jpeg(batch, mode=ImageReadMode.RGB, device=device))
            return [decode_jpeg(d, mode=ImageReadMode.RGB) for d in batch]
        except RuntimeError as exc:
            if len(batch) > 1:  # find the culprit for a useful message
                for i, d in enumerate(batch):
                    try:
                        decode_jpegs([d], device)
                    except DataError as inner:
                        label = names[i] if names is not None else f"image {i} of the batch"
                        raise DataError(f"{label}: {str(inner).split(': ', 1)[-1]}") from exc
            label = names[0] if names else "image"
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if ".cpp:" in first or ".cu:" in first:  # "decode_jpeg, /path/decode_jpeg.cpp:171, Not a JPEG file..."
                first = first.rsplit(", ", 1)[-1]
            raise DataError(f"{label}: cannot decode as JPEG ({first})") from exc


def resize_crop(x: torch.Tensor, size: int, *, resize: str = "crop", interpolation: str = "bilinear") -> torch.Tensor:
    """Float ``N×C×H×W`` images in [0, 1] to ``N×C×size×size`` on their device.

    ``crop``: shorter side to ``size`` (antialiased bilinear), then the centre square, as CLIP's
    own preprocessing does; ``pad``: longer side to ``size``, then zero padding to a square.
    ``interpolation="bicubic"`` (antialiased) follows PIL's bicubic resize of the CPU path.
    """
    h, w = x.shape[-2:]
    scale = size / (min(h, w) if resize == "crop" else max(h, w))
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if resize == "crop":
        nh, nw = max(nh, size), max(nw, size)
    x = F.interpolate(x, size=(nh, nw), mode=interpolation, antialias=True, align_corners=False)
    if resize == "crop":
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, :, top: top + size, left: left + size]
    else:
        x = F.pad(x, (0, size - nw, 0, size - nh))
    return x.clamp_(0.0, 1.0)


def to_model_batch(
    images: Sequence[torch.Tensor],
    size: int,
    *,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    resize: str = "crop",
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Decoded images (any sizes) to one normalised ``N×3×size×size`` batch on their device.

    Images of the same shape (the usual case: one camera) are resized together in one call.
    """
    if not images:
        raise DataError("no images to batch")
    device = images[0].device
    out = torch.empty(len(images), 3, size, size, device=device, dtype=torch.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    for idx in groups.values():
        for start in range(0, len(idx), 32):  # bounded float32 working set (32 full frames ≈ 0.5 GB)
            chunk = idx[start: start + 32]
            stacked = torch.stack([images[i] for i in chunk])
            x = stacked.float() / 255.0 if stacked.dtype == torch.uint8 else stacked.float()
            out[chunk] = resize_crop(x, size, resize=resize, interpolation=interpolation)
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    out = ((out - m) / s).to(dtype)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


class JpegBatchDecoder:
    """Paths (or byte tensors) in, a normalised model batch out, decoded on ``device``.

    ``decoder = JpegBatchDecoder(224, device="cuda", dtype=torch.bfloat16, channels_last=True)``;
    ``batch = decoder(paths)``. Reading the files uses ``threads`` threads; decoding is one nvJPEG
    call per batch on CUDA (torchvision's CPU decoder elsewhere).
    """

    def __init__(self, size: int, *, device: str | torch.device = "cuda", mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD, dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 resize: str = "crop", threads: int = 8):
        self.size, self.device = size, torch.device(device)
        self.mean, self.std, self.dtype = tuple(mean), tuple(std), dtype
        self.channels_last, self.resize, self.threads = channels_last, resize, threads

    @property
    def on_gpu(self) -> bool:
        return gpu_decode_available(self.device)

    def decode(self, data: Sequence[torch.Tensor], names: Sequence[str] | None = None) -> torch.Tensor:
        images = decode_jpegs(data, self.device if self.on_gpu else "cpu", names=names)
        return to_model_batch(images, self.size, mean=self.mean, std=self.std, dtype=self.dtype,
                              channels_last=self.channels_last, resize=self.resize)

    def __call__(self, paths: Sequence[str | os.PathLike]) -> torch.Tensor:
        return self.decode(read_bytes(paths, threads=self.threads), names=[str(p) for p in paths])
