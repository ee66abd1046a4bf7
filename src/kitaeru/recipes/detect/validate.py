"""``--validate-only``: validate a model on the dataset's val split and write the metrics JSON.

Writes ``<output>/validate_YYYYMMDD_HHMMSS/`` with ``data.yaml`` (the resolved copy Ultralytics
read) and ``validation_result.json`` = ``{model, dataset, split, metrics: {mAP50, mAP50-95,
precision, recall}, per_class_mAP50-95, images, instances, speed_ms_per_image, ...}``; with
``--export onnx`` the validated model is exported and checked as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitaeru.core.console import info, print_table, warn
from kitaeru.core.device import resolve_device
from kitaeru.core.run import timestamped_dir
from kitaeru.core.storage import atomic_write_json, ensure_writable_dir
from kitaeru.core.versions import library_versions
from kitaeru.data.yolo_dataset import check_labels, load_data_yaml, write_resolved_yaml

from .config import DetectConfig
from .evidence import named_metrics
from .model_source import resolve_model
from .plan import plan_detect
from .ultralytics_env import guarded, prepare_ultralytics, settings_file

VALIDATION_JSON = "validation_result.json"


@dataclass
class ValidationRun:
    folder: Path
    result: dict[str, Any]


def ultralytics_device(device: str) -> str:
    """Ultralytics' device string for a torch one: ``cuda`` → ``0``, ``cuda:1`` → ``1``."""
    if device.startswith("cuda"):
        return device.split(":", 1)[1] if ":" in device else "0"
    return device


def validate_model(config: DetectConfig) -> ValidationRun:
    """Validate ``config.model`` (or the tier's model) on the val split; write and return the result."""
    from kitaeru.core.errors import ConfigError

    if not config.dataset:
        raise ConfigError("--dataset is required (a YOLO data.yaml)")
    started = time.time()
    device = resolve_device(config.device)
    dataset = load_data_yaml(config.dataset)
    summaries = check_labels(dataset, ("val",))
    prepare_ultralytics(offline=config.offline, home_settings=config.ultralytics_home_settings)
    plan = plan_detect(config, device)
    source = resolve_model(plan.values["model"], offline=config.offline)
    if source.note:
        warn(source.note)
    folder = timestamped_dir(ensure_writable_dir(config.output), "validate")
    folder.mkdir(parents=True)
    data_yaml = write_resolved_yaml(dataset, folder / "data.yaml")
    from ultralytics import YOLO

    info(f"validating {source.load} on {dataset.yaml_path} (val, imgsz {plan.values['imgsz']}, device {device.device})")
    extra = {k: v for k, v in config.ultralytics.items() if k in ("conf", "iou", "max_det", "half", "rect", "split")}
    with guarded(config.offline):
        yolo = YOLO(source.load)
        metrics = yolo.val(
            data=str(data_yaml), imgsz=int(plan.values["imgsz"]), batch=int(plan.values["batch"]),
            workers=int(plan.values["workers"]), device=config.ultralytics.get("device", ultralytics_device(device.device)),
            plots=False, save_dir=str(folder / "ultralytics"), exist_ok=True, verbose=False, **extra,
        )
    values = named_metrics(metrics.results_dict)
    model_classes = len(getattr(yolo, "names", {}) or {})
    if model_classes and model_classes != dataset.nc:
        warn(f"the model knows {model_classes} classes, the dataset {dataset.nc}: metrics compare class ids as they are")
    names = getattr(metrics, "names", {}) or {}
    per_class = {}
    for class_id in list(getattr(metrics.box, "ap_class_index", [])):
        per_class[str(names.get(int(class_id), class_id))] = float(metrics.box.maps[int(class_id)])
    summary = summaries["val"]
    result: dict[str, Any] = {
        "status": "completed",
        "model": source.as_dict(),
        "dataset": str(dataset.yaml_path),
        "resolved_dataset": "data.yaml",
        "split": extra.get("split", "val"),
        "metrics": {k: values.get(k) for k in ("mAP50", "mAP50-95", "precision", "recall")},
        "fitness": values.get("fitness"),
        "model_classes": model_classes,
        "dataset_classes": dataset.nc,
        "per_class_mAP50-95": per_class,
        "images": summary.usable,
        "instances": summary.instances,
        "bad_labels": [p.as_skip() for p in summary.problems],
        "speed_ms_per_image": {k: round(float(v), 3) for k, v in (getattr(metrics, "speed", {}) or {}).items()},
        "imgsz": int(plan.values["imgsz"]),
        "device": device.as_dict(),
        "ultralytics_settings_file": str(settings_file()),
        "wall_time_seconds": round(time.time() - started, 3),
        "library_versions": library_versions(),
    }
    if config.export:
        from .export import export_with_parity

        if source.kind != "weights":
            raise ConfigError(f"--export with --validate-only needs .pt weights as --model (got {source.requested})")
        images = dataset.images("val")
        result["export"] = export_with_parity(
            source.load, fmt=config.export, imgsz=int(plan.values["imgsz"]), image=images[0],
            tolerance=config.export_tolerance, target=folder / (Path(source.load).stem + ".onnx"), offline=config.offline,
        )
    atomic_write_json(folder / VALIDATION_JSON, result)
    print_table(
        "detect validate",
        ["field", "value"],
        [("folder", str(folder)), ("model", source.load), *[(k, v) for k, v in result["metrics"].items()],
         ("images", result["images"]), ("instances", result["instances"])],
    )
    return ValidationRun(folder, result)
