"""A trained document-feature model behind one interface, from an ONNX file or a checkpoint.

ONNX models run on onnxruntime alone: this module and everything it imports at module level are
free of PyTorch, so ``kitaeru docclass register/classify --model model.onnx`` works where torch is
not installed. The preprocessing and the ``unknown`` threshold travel in the sidecar
``<model>.onnx.json`` written by ``export-onnx``; checkpoints carry the same facts inside.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from kitaeru.core.errors import DataError, KitaeruError
from kitaeru.recipes.docclass.documents import IMAGENET_MEAN, IMAGENET_STD, preprocess_images

SIDECAR_SUFFIX = ".json"


def sidecar_path(onnx_path: str | os.PathLike) -> Path:
    """``model.onnx`` → ``model.onnx.json`` (preprocessing, threshold, metrics of the export)."""
    return Path(str(onnx_path) + SIDECAR_SUFFIX)


@dataclass
class FeatureModel:
    """Images → L2-normalised features, with what is needed to use them."""

    path: str
    kind: str  # "onnx" or "checkpoint"
    image_size: int
    dim: int
    threshold: float | None
    threshold_fpr: float | None
    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    info: dict[str, Any] = field(default_factory=dict)
    run_batch: Callable[[np.ndarray], np.ndarray] | None = None

    def embed(self, images: Sequence[Image.Image], batch_size: int = 64) -> np.ndarray:
        """Features (N, dim) float32, unit length, of ``images`` (PIL, any size)."""
        if self.run_batch is None:
            raise KitaeruError(f"{self.path}: model is not loaded")
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = preprocess_images(images[start : start + batch_size], self.image_size, self.mean, self.std)
            chunks.append(np.asarray(self.run_batch(batch), dtype=np.float32))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        feats = np.concatenate(chunks)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)


def load_feature_model(path: str | os.PathLike, device: str = "cpu") -> FeatureModel:
    """An ONNX file (``.onnx``, onnxruntime) or a docclass Lightning checkpoint (PyTorch)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: model not found")
    if path.suffix.lower() == ".onnx":
        return _onnx_model(path)
    return _checkpoint_model(path, device)


def _onnx_model(path: Path) -> FeatureModel:
    from kitaeru.core.storage import read_json
    from kitaeru.export.onnx import onnxruntime_run, onnxruntime_session

    session = onnxruntime_session(path)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise DataError(f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}")
    input_name = inputs[0].name
    sidecar = sidecar_path(path)
    meta: dict[str, Any] = read_json(sidecar) if sidecar.is_file() else {}
    shape = inputs[0].shape
    # The graph's own fixed size wins over the sidecar's; the sidecar covers fully dynamic graphs.
    size = shape[-1] if isinstance(shape[-1], int) else meta.get("image_size")
    dim = meta.get("embedding_dim") or (outputs[0].shape[-1] if isinstance(outputs[0].shape[-1], int) else None)
    if not size or not dim:
        raise DataError(f"{path}: image size / feature size unknown (no fixed dims in the graph and no {sidecar.name})")
    fixed_batch = shape[0] if isinstance(shape[0], int) else None

    def run(batch: np.ndarray) -> np.ndarray:
        if fixed_batch is None or len(batch) == fixed_batch:
            return onnxruntime_run(session, {input_name: batch}, str(path))[0]
        # A graph exported without a dynamic batch axis: one fixed-size slice at a time.
        return np.concatenate([onnxruntime_run(session, {input_name: batch[i : i + 1]}, str(path))[0] for i in range(len(batch))])

    return FeatureModel(
        path=str(path),
        kind="onnx",
        image_size=int(size),
        dim=int(dim),
        threshold=meta.get("unknown_threshold"),
        threshold_fpr=meta.get("threshold_fpr"),
        mean=tuple(meta.get("mean", IMAGENET_MEAN)),
        std=tuple(meta.get("std", IMAGENET_STD)),
        info=meta,
        run_batch=run,
    )


def _checkpoint_model(path: Path, device: str) -> FeatureModel:
    import torch

    from .checkpoint import load_network, read_checkpoint

    checkpoint = read_checkpoint(path)
    net = load_network(checkpoint).to(device)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return FeatureModel(
        path=str(path),
        kind="checkpoint",
        image_size=checkpoint.config.data.image_size,
        dim=checkpoint.config.model.embedding_dim,
        threshold=checkpoint.threshold,
        threshold_fpr=checkpoint.info.get("threshold_fpr"),
        info={**{k: v for k, v in checkpoint.info.items() if k != "config"},
              "augment": checkpoint.config.augment.model_dump(mode="json")},
        run_batch=run,
    )
