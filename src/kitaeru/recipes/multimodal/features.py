"""Frozen features, computed once per (encoders, data) and cached.

The text and image encoders are frozen, so their outputs never change during training: they are
computed once, saved in ``OUTPUT/cache/features_<key>.npz`` and every epoch (and every later
resume, ``--skip-training`` export or ``evaluate``) reads them back instead of re-encoding. The key
hashes the encoder settings and, per scene, its id, captions, image path, size and modification
time (and the same for its time series), so changed data or encoders never hit a stale cache.
Images are decoded by parallel threads (JPEGs at reduced size via ``draft``); corrupt ones are
skipped and listed.

Encoding is the long part of a first run (minutes on a CPU), so it is saved as it goes: every
batch of images, then every batch of captions, is written to ``features_<key>.parts/`` the moment
it is encoded. A run stopped there (Ctrl-C, SIGTERM, a crash) keeps those chunks, and the next run
with the same key (``--resume``, or the same command again) encodes only what is missing. The
finished cache file replaces the chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kitaeru.core.errors import DataError
from kitaeru.data.scenes import Scene, decode_images, read_timeseries

CACHE_DIR = "cache"
CACHE_FORMAT = 1


@dataclass(frozen=True)
class EncoderSpec:
    """Which frozen encoders embed the data (from the config, or from a trained output's
    ``query_encoder.json``)."""

    text_encoder: str
    image_encoder: str
    image_pretrained: str = "default"
    image_weights: str | None = None
    image_resize: str = "crop"

    @classmethod
    def from_config(cls, config) -> "EncoderSpec":
        return cls(config.text_encoder, config.image_encoder, config.image_pretrained, config.image_weights, config.image_resize)

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> "EncoderSpec":
        return cls(info["text_encoder"], info["image_encoder"], info.get("image_pretrained") or "default",
                   info.get("image_weights"), info.get("image_resize") or "crop")

    def key_fields(self) -> dict[str, Any]:
        weights = None
        if self.image_weights:
            stat = _stat(self.image_weights)
            weights = [str(self.image_weights), *stat]
        return {"text": self.text_encoder, "image": self.image_encoder, "pretrained": self.image_pretrained,
                "weights": weights, "resize": self.image_resize}


@dataclass(frozen=True)
class SeriesSpec:
    """How time series are read: off, or resampled to ``steps`` (MCAP: from ``topics``)."""

    enabled: bool = False
    steps: int = 32
    topics: tuple[str, ...] = ()


class FrozenEncoders:
    """The two frozen encoders, loaded only when a cache miss needs them."""

    def __init__(self, spec: EncoderSpec, device: str = "cpu"):
        self.spec, self.device = spec, device
        self._text = self._image = None

    @property
    def text(self):
        if self._text is None:
            from kitaeru.models.scene_query import frozen_text_encoder

            self._text = frozen_text_encoder(self.spec.text_encoder, device=self.device)
        return self._text

    @property
    def image(self):
        if self._image is None:
            from kitaeru.models.scene_query import frozen_image_encoder

            self._image = frozen_image_encoder(
                self.spec.image_encoder, pretrained=self.spec.image_pretrained, weights=self.spec.image_weights,
                resize=self.spec.image_resize, device=self.device,
            )
        return self._image


@dataclass
class SceneFeatures:
    """Frozen features of the scenes that could be read.

    ``kept`` lists indexes into the input scene list (corrupt images dropped); ``text`` holds one
    row per caption and ``owner`` the row of ``image`` that each caption describes.
    """

    kept: list[int]
    text: np.ndarray  # (C, text_dim)
    owner: np.ndarray  # (C,) int64 index into image rows
    image: np.ndarray  # (N, image_dim)
    text_dim: int
    image_dim: int
    image_size: int
    series: np.ndarray | None = None  # (N, T, D)
    series_present: np.ndarray | None = None  # (N,) bool
    series_columns: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    key: str = ""
    from_cache: bool = False
    seconds: float = 0.0
    reused_chunks: int = 0  # chunks of an earlier, stopped encoding that were read back instead of encoded

    def __len__(self) -> int:
        return len(self.kept)


def _stat(path: str | os.PathLike) -> list[int]:
    try:
        st = os.stat(path)
        return [int(st.st_size), int(st.st_mtime_ns)]
    except OSError:
        return []


def cache_key(scenes: Sequence[Scene], spec: EncoderSpec, series: SeriesSpec) -> str:
    """A hash of everything the features depend on."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, "encoders": spec.key_fields(),
                              "series": [series.enabled, series.steps, list(series.topics)]}, sort_keys=True).encode())
    for s in scenes:
        item = [s.scene_id, s.descriptions, s.image, _stat(s.image)]
        if series.enabled:
            item += [s.timeseries, _stat(s.timeseries) if s.timeseries else None,
                     None if s.series is None else hashlib.sha1(np.ascontiguousarray(s.series).tobytes()).hexdigest()]
        digest.update(json.dumps(item, ensure_ascii=False).encode())
    return digest.hexdigest()[:20]


def extract_features(
    scenes: Sequence[Scene],
    encoders: FrozenEncoders,
    *,
    series: SeriesSpec = SeriesSpec(),
    cache_dir: str | os.PathLike | None = None,
    workers: int = 2,
    batch_size: int = 32,
) -> SceneFeatures:
    """Features of ``scenes`` from the cache when present, else encoded now (and cached)."""
    import time

    started = time.time()
    key = cache_key(scenes, encoders.spec, series)
    cache_file = Path(cache_dir) / f"features_{key}.npz" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        cached = _read_cache(cache_file, key)
        if cached is not None:
            cached.seconds = round(time.time() - started, 3)
            return cached
    _ = (encoders.text, encoders.image)  # load both first: a bad encoder name fails before any work is done
    parts = ChunkStore(cache_file.with_suffix(".parts") if cache_file is not None else None)
    if parts.count():
        from kitaeru.core.console import info

        info(f"continuing an interrupted feature encoding: {parts.count()} encoded chunks kept in {parts.folder}")
    kept, image, skipped = encode_scene_images(scenes, encoders.image, workers=workers, batch_size=batch_size,
                                               parts=parts)
    if not kept:
        raise DataError(f"no readable image among {len(scenes)} scenes ({skipped[0]['reason'] if skipped else ''})")
    captions, owner = [], []
    for row, index in enumerate(kept):
        for caption in scenes[index].descriptions:
            captions.append(caption)
            owner.append(row)
    text = encode_captions(captions, encoders.text, batch_size=max(batch_size, 64), parts=parts)
    feats = SceneFeatures(
        kept=kept, text=text, owner=np.asarray(owner, dtype=np.int64), image=image,
        text_dim=int(encoders.text.dim), image_dim=int(encoders.image.dim), image_size=int(encoders.image.image_size),
        skipped=skipped, key=key, reused_chunks=parts.reused,
    )
    if series.enabled:
        feats.series, feats.series_present, feats.series_columns = load_series([scenes[i] for i in kept], series)
    feats.seconds = round(time.time() - started, 3)
    if cache_file is not None:
        _write_cache(cache_file, feats)
        parts.clear()  # only once the whole cache is safely on disk
    return feats


class ChunkStore:
    """Finished chunks of one encoding (``folder`` None: nothing is kept, as for a run without a cache).

    A chunk is one ``.npz`` named by what it holds and where it starts (``images_00000032.npz``),
    written atomically: a chunk file that exists is complete. The cache key in the folder name
    already covers the encoders, the data and the order of the scenes, and every chunk also records
    the batch size it was cut with, so a chunk is only reused for exactly the same slice.
    """

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.reused = 0

    def _path(self, kind: str, start: int) -> Path:
        return self.folder / f"{kind}_{start:08d}.npz"

    def count(self) -> int:
        return len(list(self.folder.glob("*.npz"))) if self.folder is not None and self.folder.is_dir() else 0

    def load(self, kind: str, start: int, size: int) -> dict[str, Any] | None:
        if self.folder is None or not self._path(kind, start).is_file():
            return None
        try:
            with np.load(self._path(kind, start), allow_pickle=False) as data:
                chunk = {name: data[name] for name in data.files}
        except (OSError, ValueError):
            return None  # a damaged chunk is encoded again, never trusted
        if int(chunk.get("size", -1)) != size:
            return None
        self.reused += 1
        return chunk

    def save(self, kind: str, start: int, size: int, **arrays: np.ndarray) -> None:
        if self.folder is None:
            return
        from kitaeru.core.storage import atomic_path

        with atomic_path(self._path(kind, start)) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, size=np.int64(size), **arrays)

    def clear(self) -> None:
        if self.folder is not None and self.folder.is_dir():
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)


def encode_scene_images(scenes: Sequence[Scene], image_encoder, *, workers: int = 2, batch_size: int = 32,
                        parts: ChunkStore | None = None):
    """``(kept indexes, (N, dim) features, skipped)``: decode batches in threads, encode, skip bad
    files; each batch is saved to ``parts`` as it completes, and read back from there when present."""
    from kitaeru.core.console import track

    parts = parts or ChunkStore(None)
    kept: list[int] = []
    chunks: list[np.ndarray] = []
    skipped: list[dict[str, str]] = []
    starts = range(0, len(scenes), batch_size)
    for start in track(starts, "encoding images", total=len(starts)):
        batch = scenes[start:start + batch_size]
        chunk = parts.load("images", start, len(batch))
        if chunk is None:
            chunk = _encode_image_batch(batch, start, image_encoder, workers)
            parts.save("images", start, len(batch), **chunk)
        kept.extend(int(i) for i in chunk["kept"])
        skipped.extend(json.loads(bytes(chunk["skipped"]).decode()))
        if len(chunk["features"]):
            chunks.append(chunk["features"])
    features = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, image_encoder.dim), np.float32)
    return kept, features, skipped


def _encode_image_batch(batch: Sequence[Scene], start: int, image_encoder, workers: int) -> dict[str, np.ndarray]:
    """One batch as a chunk: scene indexes kept, their features, and the skipped files (JSON bytes)."""
    import torch

    decoded = decode_images([s.image for s in batch], workers=workers, min_side=image_encoder.image_size)
    tensors, kept, skipped = [], [], []
    for offset, (scene, result) in enumerate(zip(batch, decoded)):
        if isinstance(result, Exception):
            skipped.append({"path": scene.image, "reason": str(result)})
            continue
        tensors.append(image_encoder.transform(result))
        kept.append(start + offset)
    features = (image_encoder.encode(torch.stack(tensors)).numpy().astype(np.float32) if tensors
                else np.zeros((0, image_encoder.dim), np.float32))
    return {"kept": np.asarray(kept, dtype=np.int64), "features": features,
            "skipped": np.frombuffer(json.dumps(skipped).encode(), dtype=np.uint8)}


def encode_captions(captions: Sequence[str], text_encoder, *, batch_size: int = 64,
                    parts: ChunkStore | None = None) -> np.ndarray:
    """``(C, dim)`` raw sentence features, in batches with a progress bar (each batch saved to
    ``parts`` as it completes, and read back from there when present)."""
    from kitaeru.core.console import track

    parts = parts or ChunkStore(None)
    chunks = []
    starts = range(0, len(captions), batch_size)
    for start in track(starts, "encoding captions", total=len(starts)):
        batch = list(captions[start:start + batch_size])
        chunk = parts.load("captions", start, len(batch))
        if chunk is None:
            chunk = {"features": np.asarray(text_encoder.encode(batch, batch_size=batch_size), dtype=np.float32)}
            parts.save("captions", start, len(batch), **chunk)
        chunks.append(chunk["features"])
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, text_encoder.dim), np.float32)


def load_series(scenes: Sequence[Scene], spec: SeriesSpec) -> tuple[np.ndarray, np.ndarray, int]:
    """``(N, steps, D)`` series (zeros where a scene has none), presence flags and D.

    Every series must have the same number of columns D; the first one found sets it.
    """
    arrays: list[np.ndarray | None] = []
    width = None
    first = ""
    for scene in scenes:
        if scene.series is not None:
            array, where = np.asarray(scene.series, dtype=np.float32), f"{scene.scene_id} (CAN bus)"
            if array.shape[0] != spec.steps:
                from kitaeru.data.scenes import resample_rows

                array = resample_rows(array, spec.steps)
        elif scene.timeseries:
            array, where = read_timeseries(scene.timeseries, steps=spec.steps, mcap_topics=spec.topics), scene.timeseries
        else:
            arrays.append(None)
            continue
        if width is None:
            width, first = array.shape[1], where
        elif array.shape[1] != width:
            raise DataError(f"{where}: time series has {array.shape[1]} columns but {first} has {width}; all must match")
        arrays.append(array)
    if width is None:
        raise DataError(
            "--include-timeseries: no scene has a time series (expected timeseries/<scene_id>.npy or .mcap, "
            "or the nuScenes CAN bus expansion)"
        )
    present = np.array([a is not None for a in arrays])
    stacked = np.stack([a if a is not None else np.zeros((spec.steps, width), np.float32) for a in arrays])
    return stacked.astype(np.float32), present, int(width)


# ---- cache file ------------------------------------------------------------------------------------
def _write_cache(path: Path, feats: SceneFeatures) -> None:
    from kitaeru.core.storage import atomic_path

    meta = {
        "format": CACHE_FORMAT, "key": feats.key, "text_dim": feats.text_dim, "image_dim": feats.image_dim,
        "image_size": feats.image_size, "series_columns": feats.series_columns, "skipped": feats.skipped,
    }
    arrays = {"kept": np.asarray(feats.kept, dtype=np.int64), "text": feats.text, "owner": feats.owner,
              "image": feats.image, "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    if feats.series is not None:
        arrays["series"] = feats.series
        arrays["series_present"] = feats.series_present
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _read_cache(path: Path, key: str) -> SceneFeatures | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                return None
            return SceneFeatures(
                kept=[int(i) for i in data["kept"]], text=data["text"], owner=data["owner"], image=data["image"],
                text_dim=int(meta["text_dim"]), image_dim=int(meta["image_dim"]), image_size=int(meta["image_size"]),
                series=data["series"] if "series" in data else None,
                series_present=data["series_present"] if "series_present" in data else None,
                series_columns=int(meta.get("series_columns", 0)), skipped=list(meta.get("skipped", [])),
                key=key, from_cache=True,
            )
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None  # a damaged cache is recomputed, never trusted
