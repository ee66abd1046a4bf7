"""Versions of the libraries a run used, recorded in its evidence for reproducibility."""

from __future__ import annotations

import functools
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
    out = dict(_installed_versions(tuple(extra)))
    if "torch" in sys.modules:
        import torch

        out["cuda"] = torch.version.cuda or "none"
    return out


@functools.lru_cache(maxsize=8)
def _installed_versions(extra: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # Reading package metadata costs tens of milliseconds; the evidence asks on every heartbeat.
    out = [("python", platform.python_version())]
    for dist in (*_TRACKED, *extra):
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            continue
    return tuple(out)
