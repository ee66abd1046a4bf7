"""``kitaeru detect predict``: a trained model (``.pt`` or exported ``.onnx``) over images.

Ultralytics' own predictor does the work (``save=True, save_txt=True``) into
``<output-dir>/predict/`` (``predict2``, ... when taken): each image with its detections drawn, and
``labels/<image>.txt`` in YOLO format (``class cx cy w h``, normalised; ``--save-conf`` adds the
confidence). An image without detections gets no label file, as in Ultralytics. The image size
defaults to the one the model was trained at (``.pt``) or exported at (``.onnx``, fixed input).
``predict_result.json`` lists what was written.
"""

from __future__ import annotations

import glob
import time
from collections import Counter
from pathlib import Path
from typing import Any

from kitaeru.core.console import info, print_table
from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.run import next_run_dir
from kitaeru.core.storage import atomic_write_json, check_output_path, ensure_writable_dir, is_remote

from .config import PredictConfig, check_device

PREDICT_JSON = "predict_result.json"
MODEL_SUFFIXES = (".pt", ".onnx")


def check_predict(config: PredictConfig) -> None:
    """Cheap checks before any heavy import."""
    if not config.model:
        raise ConfigError("--model is required (trained .pt weights or an exported .onnx)")
    model = Path(config.model).expanduser()
    if model.suffix.lower() not in MODEL_SUFFIXES:
        raise ConfigError(f"--model {config.model}: expected .pt weights or an .onnx export")
    if not model.is_file():
        raise DataError(f"--model {config.model}: file not found")
    if not config.source:
        raise ConfigError("--source is required (an image, a folder of images, a glob or a video)")
    if is_remote(config.source):
        raise ConfigError(f"--source {config.source}: remote locations are not supported; copy the images locally")
    if glob.has_magic(config.source):
        if not glob.glob(config.source):
            raise DataError(f"--source {config.source}: no file matches")
    elif not Path(config.source).expanduser().exists():
        raise DataError(f"--source {config.source}: not found")
    check_output_path(config.output_dir, setting="--output-dir", kind="dir")
    check_device(config.device)


def check_onnx_model(path: Path) -> None:
    """An ``.onnx`` that onnx cannot parse or check: one line before Ultralytics and ONNX Runtime load
    (which would report it as a bare TypeError)."""
    import onnx

    try:
        onnx.checker.check_model(str(path))  # by path: external data and >2 GB models are checked too
    except Exception as exc:  # noqa: BLE001 - protobuf and checker errors have no common base
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"--model {path}: not a loadable ONNX model ({reason})") from exc


def predict_images(config: PredictConfig) -> dict[str, Any]:
    """Run the model over ``config.source``; write annotated images and YOLO txt labels (see module doc)."""
    from .model_source import check_weight_arguments, check_weights, expand_cfg_argument, trained_image_size
    from .ultralytics_env import guarded, prepare_ultralytics
    from .evaluation import resolve_detect_device, ultralytics_device_arg

    check_predict(config)
    if Path(config.model).suffix.lower() == ".onnx":
        check_onnx_model(Path(config.model).expanduser())
    started = time.time()
    device = resolve_detect_device(config.device)
    prepare_ultralytics(offline=config.offline, home_settings=config.ultralytics_home_settings)
    from ultralytics import YOLO

    model = Path(config.model).expanduser().resolve()
    onnx = model.suffix.lower() == ".onnx"
    if not onnx:
        check_weights(model, trust=config.trust_checkpoint)  # before YOLO(), which unpickles fully
    extra = expand_cfg_argument(dict(config.ultralytics))
    check_weight_arguments(extra, trust=config.trust_checkpoint)
    imgsz = config.image_size or (None if onnx else trained_image_size(model, trust=config.trust_checkpoint)) or 640
    folder = next_run_dir(ensure_writable_dir(Path(config.output_dir).expanduser().resolve()), "predict")
    info(f"predicting with {model} on {config.source} (imgsz {'from the export' if onnx and not config.image_size else imgsz}) "
         f"into {folder}")
    images, per_class = 0, Counter()
    with guarded(config.offline):
        yolo = YOLO(str(model), task="detect")
        results = yolo.predict(
            source=config.source, imgsz=imgsz, conf=config.conf, iou=config.iou, max_det=config.max_det,
            device=ultralytics_device_arg(config.device, device.device, several=False), save=config.save_images, save_txt=config.save_txt,
            save_conf=config.save_conf, project=str(folder.parent), name=folder.name, exist_ok=True,
            stream=True, verbose=False, **extra,
        )
        for result in results:
            images += 1
            names = result.names or {}
            for cls in (result.boxes.cls.tolist() if result.boxes is not None else []):
                per_class[str(names.get(int(cls), int(cls)))] += 1
    labels = sorted((folder / "labels").glob("*.txt")) if config.save_txt else []
    drawn = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".mp4", ".avi")) \
        if folder.is_dir() else []
    result = {
        "status": "completed",
        "folder": str(folder),
        "model": str(model),
        "source": str(config.source),
        "imgsz": imgsz if not onnx or config.image_size else "from the export",
        "images": images,
        "detections": int(sum(per_class.values())),
        "detections_per_class": dict(per_class.most_common()),
        "annotated_images": [p.name for p in drawn],
        "label_files": [str(p.relative_to(folder)) for p in labels],
        "device": device.as_dict(),
        "wall_time_seconds": round(time.time() - started, 3),
    }
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / PREDICT_JSON, result)
    return result


def print_summary(result: dict[str, Any]) -> None:
    print_table("detect predict", ["field", "value"], [
        ("folder", result["folder"]), ("images", result["images"]), ("detections", result["detections"]),
        ("annotated images", len(result["annotated_images"])), ("label files", len(result["label_files"])),
    ])
