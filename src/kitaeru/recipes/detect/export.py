"""ONNX export of trained weights with an onnxruntime-vs-PyTorch check on a real image.

Ultralytics exports (its own exporter, fixed 1×3×S×S input); kitaeru then letterboxes a real image
of the dataset, runs the PyTorch model and the ONNX file on it, and reports the largest absolute
difference of the raw outputs (boxes in pixels and class scores). The export is made in a
temporary folder beside the target and moved into place only when it loads and the check ran.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from kitaeru.core.errors import ConfigError, KitaeruError

SUPPORTED_FORMATS = ("onnx",)


def letterbox_array(image_path: str | Path, size: int):
    """A real image as a float32 NCHW array in [0, 1], resized to fit ``size`` and padded with grey 114."""
    import numpy as np
    from PIL import Image

    from kitaeru.data.images import open_image

    picture = open_image(image_path, min_side=size)
    scale = min(size / picture.width, size / picture.height)
    new = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    canvas = Image.new("RGB", (size, size), (114, 114, 114))
    canvas.paste(picture.resize(new, Image.BILINEAR), ((size - new[0]) // 2, (size - new[1]) // 2))
    array = np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1)[None] / 255.0
    return np.ascontiguousarray(array)


def export_with_parity(
    weights: str | Path,
    *,
    fmt: str,
    imgsz: int,
    image: str | Path,
    tolerance: float,
    target: str | Path | None = None,
    offline: bool = True,
) -> dict[str, Any]:
    """Export ``weights`` to ``target`` (default: beside them, ``.onnx``); compare onnxruntime with PyTorch on ``image``."""
    import torch
    from ultralytics import YOLO

    from kitaeru.export.onnx import onnxruntime_max_abs_diff

    from .ultralytics_env import guarded

    if fmt not in SUPPORTED_FORMATS:
        raise ConfigError(f"--export {fmt}: unsupported format (choose from {', '.join(SUPPORTED_FORMATS)})")
    weights = Path(weights)
    if not weights.is_file():
        raise KitaeruError(f"--export: {weights} not found (the run saved no weights)")
    started = time.time()
    target = Path(target) if target is not None else weights.with_suffix(".onnx")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".kitaeru-export-", dir=target.parent) as tmp:
        staged = Path(tmp) / weights.name
        shutil.copyfile(weights, staged)
        with guarded(offline), warnings.catch_warnings():
            # The tracer's notes about Python branches in the Detect head are not the user's to act on.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            exported = Path(str(YOLO(str(staged)).export(format="onnx", imgsz=imgsz, simplify=False, dynamic=False,
                                                       device="cpu", verbose=False)))
        if not exported.is_file():
            raise KitaeruError(f"--export onnx: Ultralytics reported {exported} but wrote no file")
        inputs = letterbox_array(image, imgsz)
        with guarded(offline):
            module = YOLO(str(weights)).model.float().eval()
        with torch.inference_mode():
            reference = module(torch.from_numpy(inputs))
        if isinstance(reference, (list, tuple)):
            reference = reference[0]
        import onnxruntime

        input_name = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        diff = onnxruntime_max_abs_diff(exported, {input_name: inputs}, [reference.numpy()])
        shutil.move(str(exported), str(target))
    return {
        "format": fmt,
        "path": str(target),
        "imgsz": imgsz,
        "image": str(image),
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "parity_ok": bool(diff <= tolerance),
        "output_shape": list(reference.shape),
        "seconds": round(time.time() - started, 2),
    }


def check_export(config) -> None:
    """Cheap checks of ``kitaeru detect export`` before any heavy import."""
    from kitaeru.core.errors import DataError
    from kitaeru.core.storage import check_output_path

    if not config.model:
        raise ConfigError("--model is required (trained .pt weights)")
    if Path(config.model).suffix.lower() != ".pt":
        raise ConfigError(f"--model {config.model}: expected .pt weights")
    if not Path(config.model).expanduser().is_file():
        raise DataError(f"--model {config.model}: weights file not found")
    if config.image and not Path(config.image).expanduser().is_file():
        raise DataError(f"--image {config.image}: not found")
    if config.data_dir and not config.image and not Path(config.data_dir).expanduser().is_file():
        from kitaeru.recipes.detect.data import data_yaml_missing

        raise data_yaml_missing(str(config.data_dir))
    check_output_path(config.output, setting="--output", kind="file")


def parity_image(config) -> Path:
    """The parity check's input: ``--image``, else the first val image of ``--data-dir``, else Ultralytics' bus.jpg."""
    if config.image:
        return Path(config.image).expanduser()
    if config.data_dir:
        from .data import load_data_yaml

        images = load_data_yaml(config.data_dir).images("val")
        if images:
            return Path(images[0])
    from ultralytics.utils import ASSETS

    return Path(ASSETS) / "bus.jpg"


def export_model(config) -> dict[str, Any]:
    """``kitaeru detect export``: export ``--model`` and check it against PyTorch (see module doc)."""
    from .model_source import check_weights, trained_image_size
    from .ultralytics_env import prepare_ultralytics

    check_export(config)
    prepare_ultralytics(offline=config.offline, home_settings=config.ultralytics_home_settings)
    weights = Path(config.model).expanduser().resolve()
    check_weights(weights, trust=config.trust_checkpoint)  # before YOLO(), which unpickles fully
    imgsz = config.image_size or trained_image_size(weights, trust=config.trust_checkpoint) or 640
    result = export_with_parity(weights, fmt=config.format, imgsz=int(imgsz), image=parity_image(config),
                                tolerance=config.tolerance, target=config.output, offline=config.offline)
    result["model"] = str(weights)
    if not result["parity_ok"]:
        from kitaeru.core.console import warn

        warn(f"the export differs from PyTorch by {result['max_abs_diff']:.3g} (> tolerance {config.tolerance:g})")
    return result


def print_summary(result: dict[str, Any]) -> None:
    from kitaeru.core.console import print_table

    print_table("detect export", ["field", "value"], [
        ("file", result["path"]), ("image size", result["imgsz"]), ("max |diff| vs PyTorch", result["max_abs_diff"]),
        ("parity ok", result["parity_ok"]), ("seconds", result["seconds"]),
    ])
