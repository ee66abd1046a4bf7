"""Register templates into a feature bank and classify document photos against it (torch-free).

``bank.npz`` holds ``features`` (N, D) float32 unit vectors, ``labels`` (N,) (file stem, or the
sub-folder name for templates inside one), ``paths`` (N,), ``feature_dim`` and ``model`` (the path
of the model that made it). A photo's label is the label whose best template scores highest by
cosine similarity; below the threshold it is ``unknown``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.storage import IMAGE_EXTENSIONS, atomic_path, is_remote, list_files

from .inference import FeatureModel

UNKNOWN = "unknown"


@dataclass
class Bank:
    path: str
    features: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    model: str

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def register_templates(model: FeatureModel, templates_dir: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Embed every template image under ``templates_dir`` and write the bank to ``out``."""
    from kitaeru.recipes.docclass.documents import read_template_pool

    pool = read_template_pool(templates_dir, max_side=max(256, 2 * model.image_size), label_by="folder")
    features = model.embed(pool.images)
    out = Path(out)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                features=features.astype(np.float32),
                labels=np.asarray(pool.labels, dtype=str),
                paths=np.asarray(pool.paths, dtype=str),
                feature_dim=np.asarray(features.shape[1]),
                model=np.asarray(str(model.path)),
            )
    return {
        "bank": str(out),
        "templates": len(pool),
        "labels": sorted(set(pool.labels)),
        "feature_dim": int(features.shape[1]),
        "skipped": pool.skipped,
    }


def load_bank(path: str | os.PathLike) -> Bank:
    """Read a bank written by :func:`register_templates`, with one-line errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: bank not found")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: not a docclass bank (a single array; a bank is the .npz file that "
                            "'kitaeru docclass register' writes)")
        with loaded as data:
            missing = [k for k in ("features", "labels", "paths") if k not in data.files]
            if missing:
                raise DataError(f"{path}: not a docclass bank (missing {', '.join(missing)})")
            features = np.asarray(data["features"], dtype=np.float32)
            labels, paths = np.asarray(data["labels"]), np.asarray(data["paths"])
            model = str(data["model"]) if "model" in data.files else ""
    except DataError:
        raise
    except ValueError as exc:  # numpy's "pickled data ... allow_pickle" for anything that is not .npy/.npz
        raise DataError(f"{path}: not a docclass bank (not a NumPy .npz file)") from exc
    except Exception as exc:  # noqa: BLE001 - zip/pickle/format errors
        raise DataError(f"{path}: cannot read bank ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if features.ndim != 2 or len(features) == 0 or len(labels) != len(features):
        raise DataError(f"{path}: malformed bank (features {features.shape}, {len(labels)} labels)")
    return Bank(path=str(path), features=features, labels=labels, paths=paths, model=model)


def expand_images(items: Sequence[str]) -> list[str]:
    """Image paths from the command line: files as given, folders expanded (recursively)."""
    out: list[str] = []
    for item in items:
        if not is_remote(item) and Path(item).is_dir():
            found = list_files(item, IMAGE_EXTENSIONS)
            if not found:
                raise DataError(f"{item}: no images in this folder")
            out.extend(found)
        else:
            out.append(str(item))
    if not out:
        raise DataError("give at least one image to classify")
    return out


def embed_files(model: FeatureModel, paths: Sequence[str], chunk: int = 64) -> np.ndarray:
    """Features of image files, decoded in parallel threads (reduced-size JPEG decoding) a chunk at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from kitaeru.data.images import open_image

    def decode(path: str):
        return open_image(path, min_side=2 * model.image_size)

    parts = []
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        for start in range(0, len(paths), chunk):
            parts.append(model.embed(list(pool.map(decode, paths[start : start + chunk]))))
    return np.concatenate(parts) if parts else np.zeros((0, model.dim), dtype=np.float32)


def classify_images(
    model: FeatureModel,
    bank: Bank,
    images: Sequence[str],
    *,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Per image: ``label`` (or ``unknown``), ``score`` (best cosine), ``best_match``, ``threshold``."""
    if bank.dim != model.dim:
        raise DataError(
            f"{bank.path}: bank features are {bank.dim}-d but {model.path} gives {model.dim}-d features "
            "(register the templates again with this model)"
        )
    if threshold is None:
        threshold = model.threshold
    if threshold is None:
        raise ConfigError(f"{model.path}: no 'unknown' threshold stored with this model; pass --threshold")
    paths = expand_images(images)
    features = embed_files(model, paths)
    scores = features @ bank.features.T
    labels = list(dict.fromkeys(bank.labels.tolist()))
    # Best template per label, so a label registered with many templates is not favoured.
    per_label = np.stack([scores[:, bank.labels == label].max(axis=1) for label in labels], axis=1)
    results = []
    for path, row in zip(paths, per_label):
        best = int(np.argmax(row))
        score = float(row[best])
        results.append(
            {
                "image": path,
                "label": labels[best] if score >= threshold else UNKNOWN,
                "score": round(score, 6),
                "best_match": labels[best],
                "threshold": round(float(threshold), 6),
            }
        )
    return results
