"""The input side of ``kitaeru embed``: which files to embed, and a loader that decodes them fast.

Files are listed once (paths only: memory stays small for big folders) and decoded in parallel
worker processes, a batch at a time with a small prefetch, so only a few batches of pixels exist
at once. Each worker reads the file's bytes once (local or fsspec URL), takes the original size
from the header, then decodes with ``open_image(..., min_side=image_size)``, which lets libjpeg
decode a 1600×900 JPEG at 1/2 or 1/4 scale when the model needs 224 px. An unreadable file becomes
an ``error`` item, not an exception, so one bad image never stops the job.
"""

from __future__ import annotations

import io
import os
import re
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

from kitaeru.core.errors import DataError
from kitaeru.core.storage import IMAGE_EXTENSIONS, is_remote, list_files, open_input

# PIL names an in-memory buffer by its repr; the path is reported separately anyway.
_BUFFER_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")
# EXIF orientations that swap width and height (rotated by 90° or 270°).
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}


def canonical_path(path: str) -> str:
    """The path recorded in the output: absolute for local files, the full URL for remote ones."""
    if is_remote(path):
        return path
    text = path[len("file://"):] if path.startswith("file://") else path
    return str(Path(text).resolve())


def list_images(image_dir: str) -> list[str]:
    """Every image under ``image_dir`` (recursive, sorted, canonical paths), or every image member of
    its webdataset tar shards (``<shard>::<member>``); errors if none."""
    from kitaeru.recipes.embed.webdataset import is_tar_source, list_members

    if is_tar_source(image_dir):
        files = list_members(image_dir)
        if not files:
            raise DataError(f"{image_dir}: no images in its tar shards")
        return files
    listed = list_files(image_dir)
    if not is_remote(image_dir):
        from kitaeru.data.scenes import check_inside

        for path in listed:  # a link out of the folder is refused like a '..' path
            check_inside(image_dir.removeprefix("file://"), path, "--image-dir")
    files = [canonical_path(f) for f in listed]
    if not files:
        kinds = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
        raise DataError(f"{image_dir}: no images found ({kinds}), searched recursively")
    return files


def pending_files(files: list[str], done: set[str], limit: int | None) -> list[str]:
    """Files not embedded yet, in order, at most ``limit`` of them."""
    todo = [f for f in files if f not in done]
    return todo[:limit] if limit else todo


def read_texts(texts_file: str | None, texts: list[str] | None) -> list[str]:
    """Texts from ``--texts FILE`` (one per line, blank lines skipped) or the ``--text`` values."""
    if texts:
        return list(texts)
    with open_input(texts_file, "rb") as fh:
        raw = fh.read()
    try:
        lines = raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{texts_file}: not UTF-8 text ({exc.reason})") from exc
    found = [line.strip() for line in lines if line.strip()]
    if not found:
        raise DataError(f"{texts_file}: no texts (expected one text per line)")
    return found


def original_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an encoded image as displayed (after EXIF rotation), from its header only."""
    from kitaeru.data.images import pil_open

    with pil_open(io.BytesIO(data)) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(0x0112)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not fail the image
            orientation = None
    return (height, width) if orientation in _TRANSPOSING_ORIENTATIONS else (width, height)


def read_input(path: str) -> bytes:
    """The raw bytes of a local file, an fsspec URL or a webdataset tar member."""
    from kitaeru.recipes.embed.webdataset import is_member, read_member

    if is_member(path):
        return read_member(path)
    with open_input(path, "rb") as fh:
        return fh.read()


def decode_item(path: str, data: bytes | None, transform: Callable[[Any], Any], min_side: int,
                read_error: BaseException | None = None) -> dict[str, Any]:
    """Decode one image's bytes into a model-ready tensor, or describe why it could not be read."""
    from kitaeru.data.images import open_image

    try:
        if read_error is not None:
            raise read_error
        image = open_image(data, min_side=min_side)
        width, height = original_size(data)
        return {"path": path, "tensor": transform(image), "width": width, "height": height}
    except DataError as exc:
        message = str(exc)
        reason = message.split(": ", 1)[1] if message.startswith(("<", path)) and ": " in message else message
        return {"path": path, "error": _BUFFER_REPR.sub("the file", reason)}
    except OSError as exc:  # permission denied, a remote read failing half-way, ...
        return {"path": path, "error": f"cannot read file ({type(exc).__name__}: {exc})"}


def load_item(path: str, transform: Callable[[Any], Any], min_side: int) -> dict[str, Any]:
    """Read and decode one image on the CPU (the decode path everywhere but CUDA's JPEGs)."""
    try:
        data = read_input(path)
    except (DataError, OSError) as exc:
        return decode_item(path, None, transform, min_side, read_error=exc)
    return decode_item(path, data, transform, min_side)


class ImageFiles:
    """A map-style dataset over image paths that yields decoded tensors or error items."""

    def __init__(self, paths: list[str], transform: Callable[[Any], Any], min_side: int):
        self.paths = paths
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return load_item(self.paths[i], self.transform, self.min_side)


def collate(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """A batch: stacked tensors of the readable images, their rows, and the unreadable ones."""
    import torch

    good = [it for it in items if "tensor" in it]
    bad = [{"path": it["path"], "reason": it["error"]} for it in items if "error" in it]
    return {
        "pixels": torch.stack([it["tensor"] for it in good]) if good else None,
        "rows": [{"path": it["path"], "width": it["width"], "height": it["height"]} for it in good],
        "skipped": bad,
    }


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def make_loader(paths: list[str], encoder: Any, *, batch_size: int, workers: int, pin_memory: bool):
    """A DataLoader decoding ``paths`` for ``encoder`` in ``workers`` processes (order preserved)."""
    from torch.utils.data import DataLoader

    from kitaeru.models.image_encoders import preprocess

    # Workers get a picklable, model-free transform: only the preprocessing settings travel.
    transform = partial(preprocess, size=encoder.image_size, mean=encoder.mean, std=encoder.std, resize=encoder.resize)
    dataset = ImageFiles(paths, transform, encoder.image_size)
    options: dict[str, Any] = {}
    if workers > 0:
        import multiprocessing

        # fork: workers inherit in-process filesystems (memory://) and start instantly
        if "fork" in multiprocessing.get_all_start_methods():
            options["multiprocessing_context"] = "fork"
        options["prefetch_factor"] = 2
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, **options)
