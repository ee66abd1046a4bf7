"""Versions of the libraries a run used, recorded in its evidence for reproducibility."""

from __future__ import annotations

import platform
import sys
from importlib import metadata

_TRACKED = (
    "kitaeru", "torch", "torchvision", "numpy", "lightning", "timm", "open_clip_torch",
    "sentence-transformers", "faiss-cpu", "ultralytics", "onnx", "onnxruntime", "umap-learn",
    "pytorch-metric-learning",
)


def library_versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the tracked distributions (absent ones omitted) plus Python's."""
    out = {"python": platform.python_version()}
    for dist in (*_TRACKED, *extra):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    if "torch" in sys.modules:
        import torch

        out["cuda"] = torch.version.cuda or "none"
    return out
