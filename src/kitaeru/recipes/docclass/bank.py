"""Register templates into a feature bank and classify document photos against it (torch-free).

``bank.npz`` holds ``features`` (N, D) float32 unit vectors, ``labels`` (N,) (file stem, or the
sub-folder name for templates inside one), ``paths`` (N,), ``feature_dim`` and ``model`` (the path
of the model that made it), and the open-set calibration of :mod:`.calibration`
(``calibration_labels``, ``calibration_thresholds``, ``calibration`` as JSON). A photo's label is
the label whose best template scores highest by cosine similarity; below that label's calibrated
threshold (the model's threshold for a bank without calibration) it is ``unknown``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
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
    calibration: dict[str, Any] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


def register_templates(model: FeatureModel, templates_dir: str | os.PathLike, out: str | os.PathLike, *,
                       target_fpr: float | None = None, calibrate: bool = True) -> dict[str, Any]:
    """Embed every template image under ``templates_dir``, calibrate the ``unknown`` thresholds for
    ``target_fpr`` (see :mod:`.calibration`) and write the bank to ``out``."""
    from kitaeru.recipes.docclass.documents import read_template_pool

    pool = read_template_pool(templates_dir, max_side=max(256, 2 * model.image_size), label_by="folder")
    features = model.embed(pool.images)
    calibration = _calibration(model, pool, features, target_fpr) if calibrate else None
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
                **(_arrays(calibration) if calibration else {}),
            )
    return {
        "bank": str(out),
        "templates": len(pool),
        "labels": sorted(set(pool.labels)),
        "feature_dim": int(features.shape[1]),
        "skipped": pool.skipped,
        "calibration": calibration,
    }


def _calibration(model: FeatureModel, pool, features: np.ndarray, target_fpr: float | None) -> dict[str, Any] | None:
    from kitaeru.core.console import warn

    target = target_fpr or model.threshold_fpr or 1e-3
    try:
        import torch  # noqa: F401 - the calibration photos are drawn with torchvision
    except ImportError:
        warn("open-set calibration skipped: drawing its photos needs PyTorch; the model's threshold is used")
        return None
    from .calibration import calibrate

    return calibrate(model, pool.images, pool.labels, features, target)


def _arrays(calibration: dict[str, Any]) -> dict[str, np.ndarray]:
    from .calibration import calibration_to_arrays

    return calibration_to_arrays(calibration)


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
            calibration, thresholds = _read_calibration(data, path)
    except DataError:
        raise
    except ValueError as exc:  # numpy's "pickled data ... allow_pickle" for anything that is not .npy/.npz
        raise DataError(f"{path}: not a docclass bank (not a NumPy .npz file)") from exc
    except Exception as exc:  # noqa: BLE001 - zip/pickle/format errors
        raise DataError(f"{path}: cannot read bank ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if features.ndim != 2 or len(features) == 0 or len(labels) != len(features):
        raise DataError(f"{path}: malformed bank (features {features.shape}, {len(labels)} labels)")
    return Bank(path=str(path), features=features, labels=labels, paths=paths, model=model,
                calibration=calibration, thresholds=thresholds)


def _read_calibration(data, path: Path) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """The stored calibration (None for a bank written before calibration existed)."""
    if "calibration_thresholds" not in data.files or "calibration_labels" not in data.files:
        return None, {}
    labels = [str(x) for x in np.asarray(data["calibration_labels"]).tolist()]
    values = np.asarray(data["calibration_thresholds"], dtype=np.float64)
    if len(labels) != len(values) or not np.all(np.isfinite(values)):
        raise DataError(f"{path}: malformed calibration (labels and thresholds do not match)")
    try:
        details = json.loads(str(data["calibration"])) if "calibration" in data.files else {}
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed calibration ({exc.msg})") from exc
    return details, dict(zip(labels, values.tolist()))


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
    labels = list(dict.fromkeys(bank.labels.tolist()))
    if threshold is not None:
        per_label = {label: float(threshold) for label in labels}  # --threshold: the same for every label
    elif bank.thresholds:
        per_label = {label: bank.thresholds.get(label, model.threshold) for label in labels}
    else:
        per_label = {label: model.threshold for label in labels}
    if any(v is None for v in per_label.values()):
        raise ConfigError(f"{model.path}: no 'unknown' threshold stored with this model; pass --threshold")
    paths = expand_images(images)
    features = embed_files(model, paths)
    scores = features @ bank.features.T
    # Best template per label, so a label registered with many templates is not favoured.
    per_image = np.stack([scores[:, bank.labels == label].max(axis=1) for label in labels], axis=1)
    results = []
    for path, row in zip(paths, per_image):
        best = int(np.argmax(row))
        score = float(row[best])
        limit = float(per_label[labels[best]])
        results.append(
            {
                "image": path,
                "label": labels[best] if score >= limit else UNKNOWN,
                "score": round(score, 6),
                "best_match": labels[best],
                "threshold": round(limit, 6),
            }
        )
    return results
