"""The decode path of ``kitaeru embed`` on CUDA: JPEGs decoded on the GPU (nvJPEG), the rest on CPU.

A GPU embeds thousands of images a second; a CPU core decodes ~100 camera JPEGs a second, so on a
few cores decoding is the ceiling. Here the worker processes only *read* each file and its header
(size, colour mode, EXIF orientation); plain RGB/greyscale JPEGs travel to the main process as
compressed bytes and are decoded there by one batched nvJPEG call, then resized and normalised on
the device (:mod:`kitaeru.recipes.embed.gpu_decode`). Everything else takes the CPU path of
:mod:`.data` unchanged: PNG/WebP/..., CMYK JPEGs and rotated (EXIF-oriented) JPEGs (nvJPEG ignores
both), and a JPEG whose GPU decode fails (corrupt bytes) is decoded again on the CPU, where it either
succeeds or becomes the same ``skipped`` item the CPU path reports.
"""

from __future__ import annotations

import io
from typing import Any, Callable, Iterable

import torch

from kitaeru.core.errors import DataError

from .data import decode_item, read_input

JPEG_MAGIC = b"\xff\xd8\xff"
NVJPEG_MODES = ("RGB", "L")  # the colour modes nvJPEG turns into the same RGB pixels as PIL


def use_gpu_decode(wanted: bool, device: str) -> bool:
    """Decode on the GPU when asked, on a CUDA device, with a torchvision that can."""
    from kitaeru.recipes.embed.gpu_decode import gpu_decode_available

    return bool(wanted) and str(device).startswith("cuda") and gpu_decode_available(device)


def gpu_decodable(data: bytes) -> tuple[bool, int, int]:
    """``(decodable by nvJPEG as is, width, height)`` from the header; raises DataError when unreadable."""
    from kitaeru.data.images import check_image_size, pil_open

    with pil_open(io.BytesIO(data)) as img:
        width, height = img.size
        check_image_size(width, height, "image")
        try:
            orientation = img.getexif().get(0x0112)
        except Exception:  # noqa: BLE001 - a broken EXIF block: let the CPU path decide
            orientation = -1
        plain = img.format == "JPEG" and img.mode in NVJPEG_MODES and orientation in (None, 1)
    return plain, width, height


def read_item(path: str, transform: Callable[[Any], Any], min_side: int) -> dict[str, Any]:
    """A worker's part: the JPEG's bytes for the GPU, or the CPU path's decoded tensor / error item."""
    try:
        data = read_input(path)
    except (DataError, OSError) as exc:
        return decode_item(path, None, transform, min_side, read_error=exc)
    if data.startswith(JPEG_MAGIC):
        try:
            plain, width, height = gpu_decodable(data)
        except (DataError, OSError, SyntaxError, ValueError):
            plain = False  # a header PIL cannot read: the CPU path names the problem
        if plain:
            return {"path": path, "jpeg": torch.frombuffer(bytearray(data), dtype=torch.uint8),
                    "width": width, "height": height}
    return decode_item(path, data, transform, min_side)


class GpuImageFiles:
    """Like :class:`.data.ImageFiles`, but JPEGs come back undecoded (bytes) for the GPU."""

    def __init__(self, paths: list[str], transform: Callable[[Any], Any], min_side: int):
        self.paths, self.transform, self.min_side = paths, transform, min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return read_item(self.paths[i], self.transform, self.min_side)


def collate_items(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the items as they are: the main process decodes the JPEGs of a batch together."""
    return list(items)


def make_gpu_loader(paths: list[str], encoder: Any, *, batch_size: int, workers: int):
    """A DataLoader over ``paths`` whose workers read (and decode only non-JPEG files)."""
    from functools import partial

    from torch.utils.data import DataLoader

    from kitaeru.models.image_encoders import preprocess

    transform = partial(preprocess, size=encoder.image_size, mean=encoder.mean, std=encoder.std, resize=encoder.resize)
    options: dict[str, Any] = {}
    if workers > 0:
        import multiprocessing

        if "fork" in multiprocessing.get_all_start_methods():
            options["multiprocessing_context"] = "fork"
        options["prefetch_factor"] = 2
    return DataLoader(GpuImageFiles(paths, transform, encoder.image_size), batch_size=batch_size, shuffle=False,
                      num_workers=workers, collate_fn=collate_items, **options)


def _decode_jpegs(items: list[dict[str, Any]], device: str) -> list[torch.Tensor | None]:
    """One batched decode; when it fails, each file alone so one bad file costs only itself."""
    from kitaeru.recipes.embed.gpu_decode import decode_jpegs

    data = [it["jpeg"] for it in items]
    try:
        return list(decode_jpegs(data, device, names=[it["path"] for it in items]))
    except DataError:
        decoded: list[torch.Tensor | None] = []
        for one in data:
            try:
                decoded.append(decode_jpegs([one], device)[0])
            except DataError:
                decoded.append(None)
        return decoded


def decode_batch(items: list[dict[str, Any]], encoder: Any, device: str,
                 transform: Callable[[Any], Any]) -> dict[str, Any]:
    """A batch as :func:`.data.collate` returns it (pixels on ``device``), plus ``cpu_fallbacks``:
    JPEGs whose GPU decode failed and that were decoded on the CPU instead."""
    from kitaeru.recipes.embed.gpu_decode import to_model_batch

    jpegs = [it for it in items if "jpeg" in it]
    decoded = _decode_jpegs(jpegs, device) if jpegs else []
    decoded_by_item = {id(it): img for it, img in zip(jpegs, decoded)}
    fallbacks = 0
    resolved: list[dict[str, Any]] = []
    for it in items:
        if "jpeg" in it and decoded_by_item[id(it)] is None:
            fallbacks += 1
            it = decode_item(it["path"], it["jpeg"].numpy().tobytes(), transform, encoder.image_size)
        resolved.append(it)
    good = [it for it in resolved if "error" not in it]
    skipped = [{"path": it["path"], "reason": it["error"]} for it in resolved if "error" in it]
    pixels = None
    if good:
        pixels = torch.empty(len(good), 3, encoder.image_size, encoder.image_size, device=device)
        gpu_rows = [i for i, it in enumerate(good) if "jpeg" in it]
        if gpu_rows:
            pixels[gpu_rows] = to_model_batch([decoded_by_item[id(good[i])] for i in gpu_rows], encoder.image_size,
                                              mean=encoder.mean, std=encoder.std, resize=encoder.resize,
                                              interpolation="bicubic")
        cpu_rows = [i for i, it in enumerate(good) if "tensor" in it]
        if cpu_rows:
            pixels[cpu_rows] = torch.stack([good[i]["tensor"] for i in cpu_rows]).to(device)
    rows = [{"path": it["path"], "width": it["width"], "height": it["height"]} for it in good]
    return {"pixels": pixels, "rows": rows, "skipped": skipped, "cpu_fallbacks": fallbacks,
            "gpu_decoded": sum(1 for it in good if "jpeg" in it)}
