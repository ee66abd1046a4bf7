"""Scene folders: ``scenes_metadata.json`` + ``images/`` (+ ``timeseries/<scene_id>.npy|.mcap``).

::

    DATA_DIR/
      scenes_metadata.json   [{"scene_id", "description", "location", "image_path", "metadata"}, ...]
      images/scene-0001.jpg
      timeseries/scene-0001.npy   (T, D) float array, or scene-0001.mcap (see kitaeru.data.mcap_series)

* ``image_path`` is relative to the folder, with ``/`` or ``\\`` separators (the original tool wrote
  Windows paths); a path that leaves the folder (``../x.jpg``, ``/etc/x.jpg``, ``C:\\x.jpg``) is a
  :class:`DataError`, never read.
* ``description`` is one caption or a list of captions of the same image (COCO/Flickr-style pairs).
* ``scene_id`` defaults to the image file's stem; duplicates are an error.
* An image file that does not exist is skipped and listed; corrupt or truncated images are found
  when they are decoded (:func:`decode_images`) and skipped and listed there.

The folder may also be an fsspec URL (``s3://bucket/scenes``).
"""

from __future__ import annotations

import os
import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kitaeru.core.errors import DataError

METADATA_FILE = "scenes_metadata.json"
IMAGES_DIR = "images"
TIMESERIES_DIR = "timeseries"
TIMESERIES_SUFFIXES = (".npy", ".mcap")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class Scene:
    """One scene: an image, one or more captions, and optionally a time series."""

    scene_id: str
    descriptions: list[str]
    image: str  # what to open: a local path or a URL
    image_path: str  # as written in the metadata, with "/" separators
    location: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    timeseries: str | None = None  # local path or URL of the .npy / .mcap file, if any
    series: np.ndarray | None = field(default=None, repr=False)  # (T, D) already in memory (nuScenes CAN bus)

    @property
    def description(self) -> str:
        """The first caption (the one shown in tables and stored as ``description``)."""
        return self.descriptions[0]

    def record(self) -> dict[str, Any]:
        """The scene as a metadata record (``scenes_metadata.json`` / vector DB shape)."""
        out: dict[str, Any] = {
            "scene_id": self.scene_id,
            "description": self.description,
            "location": self.location,
            "image_path": self.image_path,
            "metadata": dict(self.metadata),
        }
        if len(self.descriptions) > 1:
            out["descriptions"] = list(self.descriptions)
        return out


@dataclass
class SceneSet:
    """Scenes read from one source plus the inputs that were skipped (``{"path", "reason"}``)."""

    scenes: list[Scene]
    skipped: list[dict[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.scenes)


# ---- paths ---------------------------------------------------------------------------------------
def _is_remote(path: str) -> bool:
    from kitaeru.core.storage import is_remote

    return is_remote(path)


def safe_relative_path(raw: str, where: str) -> str:
    """``raw`` with ``/`` separators, checked to stay inside its folder (else :class:`DataError`)."""
    text = raw.strip().replace("\\", "/")
    if not text:
        raise DataError(f"{where}: 'image_path' is empty")
    if text.startswith("/") or _WINDOWS_DRIVE.match(text) or "://" in text:
        raise DataError(f"{where}: image_path '{raw}' is absolute; it must be relative to the data folder")
    normal = posixpath.normpath(text)
    if normal == ".." or normal.startswith("../"):
        raise DataError(f"{where}: image_path '{raw}' escapes the data folder")
    return normal


def check_inside(root: str, path: str, what: str) -> None:
    """A local file reached through ``root`` stays inside it once symbolic links are followed: a link
    out of the data folder is refused like a ``..`` path (the folder is what the user vouched for)."""
    if _is_remote(root):
        return
    inside = Path(root).resolve()
    real = Path(path).resolve()
    if real != inside and inside not in real.parents:
        raise DataError(f"{what}: {path} leads outside the data folder (to {real}; '..' or a symbolic link)")


def _join(root: str, relative: str) -> str:
    from kitaeru.core.storage import join

    return join(root, *relative.split("/"))


# ---- metadata --------------------------------------------------------------------------------------
def _descriptions(entry: dict, where: str) -> list[str]:
    value = entry.get("description")
    if value is None:
        raise DataError(f"{where}: missing 'description'")
    if isinstance(value, str):
        captions = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        captions = list(value)
    else:
        raise DataError(f"{where}: 'description' must be a string or a list of strings (got {type(value).__name__})")
    captions = [c.strip() for c in captions if c.strip()]
    if not captions:
        raise DataError(f"{where}: 'description' is empty")
    return captions


def parse_scene_entries(entries: Any, root: str, label: str) -> tuple[list[Scene], list[dict[str, str]]]:
    """Validate metadata entries and turn them into :class:`Scene` objects (images not opened).

    Structural problems (missing keys, wrong types, escaping paths, duplicate ids) raise
    :class:`DataError` naming the entry; missing image files are returned as skipped.
    """
    if isinstance(entries, dict) and isinstance(entries.get("scenes"), list):
        entries = entries["scenes"]
    if not isinstance(entries, list):
        raise DataError(f"{label}: expected a list of scene entries, got {type(entries).__name__}")
    if not entries:
        raise DataError(f"{label}: no scenes listed")
    scenes: list[Scene] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    remote = _is_remote(root)
    for i, entry in enumerate(entries):
        where = f"{label}: entry {i}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
        if entry.get("scene_id"):
            where = f"{where} ({entry['scene_id']})"
        raw_path = entry.get("image_path")
        if raw_path is None:
            raise DataError(f"{where}: missing 'image_path'")
        if not isinstance(raw_path, str):
            raise DataError(f"{where}: 'image_path' must be a string")
        relative = safe_relative_path(raw_path, where)
        captions = _descriptions(entry, where)
        scene_id = str(entry.get("scene_id") or posixpath.splitext(posixpath.basename(relative))[0])
        if scene_id in seen:
            raise DataError(f"{where}: duplicate scene_id '{scene_id}'")
        seen.add(scene_id)
        metadata = entry.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise DataError(f"{where}: 'metadata' must be an object")
        image = _join(root, relative)
        if not remote and not Path(image).is_file():
            skipped.append({"path": image, "reason": "image file not found"})
            continue
        if not remote:
            check_inside(root, image, where)
        scenes.append(Scene(
            scene_id=scene_id, descriptions=captions, image=image, image_path=relative,
            location=str(entry.get("location") or ""), metadata=metadata,
        ))
    return scenes, skipped


def _timeseries_files(root: str) -> dict[str, str]:
    """``{scene_id: path}`` of ``timeseries/*.npy|*.mcap`` (``.npy`` preferred when both exist)."""
    from kitaeru.core.storage import exists, list_files

    folder = _join(root, TIMESERIES_DIR)
    if not exists(folder):
        return {}
    found: dict[str, str] = {}
    for path in list_files(folder, TIMESERIES_SUFFIXES, recursive=False):
        stem, suffix = os.path.splitext(path.rstrip("/").rsplit("/", 1)[-1])
        check_inside(root, path, "time series")
        if stem not in found or suffix == ".npy":
            found[stem] = path
    return found


def load_scene_folder(data_dir: str | os.PathLike, *, limit: int | None = None) -> SceneSet:
    """Read a scene folder (see the module docstring); ``limit`` keeps the first N usable scenes."""
    from kitaeru.core.storage import exists, read_json

    root = str(data_dir)
    if _is_remote(root):
        if not exists(root):
            raise DataError(f"{root}: data folder not found")
    else:
        folder = Path(root)
        if not folder.is_dir():
            raise DataError(f"{root}: data folder not found")
        if not any(folder.iterdir()):
            raise DataError(f"{root}: data folder is empty (expected {METADATA_FILE} and {IMAGES_DIR}/)")
    meta_path = _join(root, METADATA_FILE)
    if not exists(meta_path):
        raise DataError(f"{root}: no {METADATA_FILE} in the data folder")
    scenes, skipped = parse_scene_entries(read_json(meta_path), root, meta_path)
    if limit is not None:
        scenes = scenes[:limit]
    series = _timeseries_files(root)
    for scene in scenes:
        scene.timeseries = series.get(scene.scene_id)
    if not scenes:
        raise DataError(f"{meta_path}: none of the listed images exist ({len(skipped)} missing)")
    return SceneSet(scenes=scenes, skipped=skipped, source=root)


# ---- time series -----------------------------------------------------------------------------------
def resample_rows(series: np.ndarray, steps: int) -> np.ndarray:
    """Linear interpolation of a ``(T, D)`` series onto ``steps`` evenly spaced rows."""
    series = np.asarray(series, dtype=np.float64)
    if len(series) == steps:
        return series.astype(np.float32)
    if len(series) == 1:
        return np.repeat(series, steps, axis=0).astype(np.float32)
    src = np.linspace(0.0, 1.0, len(series))
    dst = np.linspace(0.0, 1.0, steps)
    return np.stack([np.interp(dst, src, series[:, j]) for j in range(series.shape[1])], axis=1).astype(np.float32)


def read_timeseries(path: str | os.PathLike, *, steps: int, mcap_topics: Sequence[str] = ()) -> np.ndarray:
    """A scene's time series as ``(steps, D)`` float32 (``.npy`` of shape ``(T, D)`` or ``.mcap``)."""
    from kitaeru.core.storage import open_input

    text = str(path)
    if text.lower().endswith(".mcap"):
        from kitaeru.data.mcap_series import read_mcap_series

        return read_mcap_series(text, mcap_topics, steps=steps).values
    try:
        with open_input(text, "rb") as fh:
            array = np.load(fh, allow_pickle=False)
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{text}: not a readable .npy array ({type(exc).__name__}: {exc})") from exc
    if array.ndim != 2:
        raise DataError(f"{text}: time series must have shape (T, D), got {array.ndim}-D shape {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"{text}: time series is empty (shape {tuple(array.shape)})")
    if array.dtype.kind not in "iuf":
        raise DataError(f"{text}: time series must be numeric, got dtype {array.dtype}")
    array = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return resample_rows(array, steps)


# ---- images ------------------------------------------------------------------------------------------
def decode_images(sources: Sequence[str], *, workers: int = 2, min_side: int | None = None) -> list[Any]:
    """Decode images in parallel threads: a PIL image per source, or the :class:`DataError` that
    explains why it could not be read (the caller skips and lists those)."""
    from kitaeru.data.images import open_image

    def one(source: str):
        try:
            return open_image(source, min_side=min_side)
        except DataError as exc:
            return exc

    if workers <= 1 or len(sources) <= 1:
        return [one(s) for s in sources]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, sources))
