"""``kitaeru detect val`` (and ``train --validate-only``): a model's metrics on a dataset split.

Writes ``<output-dir>/val/`` (``val2``, ... when taken) with ``data.yaml`` (the resolved copy
Ultralytics read) and ``validation_result.json`` = ``{model, dataset, split, metrics: {mAP50,
mAP50-95, precision, recall}, per_class_mAP50-95, images, instances, speed_ms_per_image, ...}``;
with ``--export onnx`` the validated model is exported and checked as well. Values not given
(model, image size, batch size, workers) come from the GPU tier's row, as for training.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitaeru.core.console import info, print_table, warn
from kitaeru.core.device import resolve_device
from kitaeru.core.device import parse_tier
from kitaeru.core.run import next_run_dir
from kitaeru.core.storage import atomic_write_json, check_output_path, ensure_writable_dir
from kitaeru.core.versions import library_versions
from kitaeru.recipes.detect.data import check_labels, load_data_yaml, write_resolved_yaml

from .config import TIER_TABLE, TrainConfig, ValConfig, check_device, is_gpu_list
from .evidence import named_metrics
from .model_source import check_user_weights, check_weights, resolve_model
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


def resolve_detect_device(requested: str):
    """:func:`~kitaeru.core.device.resolve_device`, plus Ultralytics' GPU lists (``0,1``, ``-1``): each
    index must exist (a one-line error naming ``--device`` otherwise); the plan is made for the first GPU."""
    from kitaeru.core.errors import DeviceError

    check_device(requested)
    value = str(requested).replace(" ", "").lower()
    if not is_gpu_list(value):
        return resolve_device(value)
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(f"--device {requested}: no CUDA GPU is available on this machine (use --device cpu or auto)")
    count = torch.cuda.device_count()
    indices = [int(i) for i in value.split(",")]
    missing = [i for i in indices if i >= count]
    if missing:
        raise DeviceError(f"--device {requested}: only {count} CUDA device(s) present (indices 0..{count - 1})")
    if len([i for i in indices if i >= 0]) != len({i for i in indices if i >= 0}):
        raise DeviceError(f"--device {requested}: a GPU is listed twice")
    if -1 in indices and len(indices) > count:
        raise DeviceError(f"--device {requested}: asks for {len(indices)} idle GPUs, only {count} present")
    first = next((i for i in indices if i >= 0), None)
    import dataclasses

    return dataclasses.replace(resolve_device(f"cuda:{first}" if first is not None else "cuda"), requested=requested)


def ultralytics_device_arg(requested: str, resolved: str, *, several: bool = True) -> str:
    """What Ultralytics is given: a GPU list as the user wrote it (``0,1`` → its own DDP), else the
    resolved torch device in Ultralytics' spelling; ``several=False`` (val, predict) keeps the first GPU."""
    value = str(requested).replace(" ", "")
    if is_gpu_list(value):
        return value if several or "," not in value else value.split(",")[0]
    return ultralytics_device(resolved)


VAL_ARGS = ("conf", "iou", "max_det", "half", "rect")


def val_config_from_train(config: TrainConfig) -> ValConfig:
    """``train --validate-only``: the same settings, as ``detect val`` takes them."""
    shared = {k: getattr(config, k) for k in ValConfig.model_fields if k in TrainConfig.model_fields and k != "ultralytics"}
    extra = {k: v for k, v in config.ultralytics.items() if k in VAL_ARGS}
    if "split" in config.ultralytics:
        shared["split"] = config.ultralytics["split"]
    return ValConfig.model_validate({**shared, "ultralytics": extra})


def check_val(config: ValConfig) -> None:
    """Cheap checks before any heavy import."""
    from kitaeru.core.errors import ConfigError, DataError

    if not config.data_dir:
        raise ConfigError("--data-dir is required (a YOLO data.yaml)")
    data = Path(config.data_dir).expanduser()
    if not (data.is_file() or (data / "data.yaml").is_file()):
        from kitaeru.recipes.detect.data import data_yaml_missing

        raise data_yaml_missing(str(config.data_dir))
    if config.model and ("/" in config.model or "\\" in config.model) and not Path(config.model).expanduser().exists():
        raise DataError(f"--model {config.model}: weights file not found")
    check_device(config.device)
    check_output_path(config.output_dir, setting="--output-dir", kind="dir")
    if config.model and Path(config.model).suffix.lower() not in ("", ".pt", ".yaml", ".yml"):
        raise ConfigError(f"--model {config.model}: expected .pt weights")
    from .model_source import check_model_yaml

    check_model_yaml(config.model)
    unknown = sorted(set(config.ultralytics) - set(VAL_ARGS))
    if unknown:
        raise ConfigError(f"unknown validation argument(s): {', '.join(unknown)} (accepted: {', '.join(VAL_ARGS)})")


def validate_model(config: ValConfig) -> ValidationRun:
    """Validate ``config.model`` (or the tier's model) on the split; write and return the result."""
    from kitaeru.core.errors import ConfigError

    check_val(config)
    check_user_weights(config.model, trust=config.trust_checkpoint)
    started = time.time()
    device = resolve_detect_device(config.device)
    dataset = load_data_yaml(config.data_dir)
    if config.split not in dataset.splits:  # before Ultralytics loads a model only to say it differently
        from kitaeru.core.errors import DataError

        raise DataError(f"--split {config.split}: {dataset.yaml_path} has no '{config.split}' split "
                        f"(it has: {', '.join(sorted(dataset.splits))})")
    summaries = check_labels(dataset, (config.split,))
    prepare_ultralytics(offline=config.offline, home_settings=config.ultralytics_home_settings)
    row = TIER_TABLE[parse_tier(config.gpu_tier) or device.tier]
    values = {"model": config.model or row["model"], "imgsz": config.image_size or row["imgsz"],
              "batch": config.batch_size or row["batch"], "workers": row["workers"] if config.workers is None else config.workers}
    source = resolve_model(values["model"], offline=config.offline)
    if source.note:
        warn(source.note)
    if source.kind == "weights":
        check_weights(source.load, trust=config.trust_checkpoint)  # before YOLO(), which unpickles fully
    folder = next_run_dir(ensure_writable_dir(config.output_dir), "val")
    folder.mkdir(parents=True, exist_ok=True)
    data_yaml = write_resolved_yaml(dataset, folder / "data.yaml")
    from ultralytics import YOLO

    info(f"validating {source.load} on {dataset.yaml_path} ({config.split}, imgsz {values['imgsz']}, device {device.device})")
    with guarded(config.offline):
        yolo = YOLO(source.load)
        metrics = yolo.val(
            data=str(data_yaml), imgsz=int(values["imgsz"]), batch=int(values["batch"]), split=config.split,
            workers=int(values["workers"]), device=ultralytics_device_arg(config.device, device.device, several=False),
            plots=False, save_dir=str(folder / "ultralytics"), exist_ok=True, verbose=False, **config.ultralytics,
        )
    scores = named_metrics(metrics.results_dict)
    model_classes = len(getattr(yolo, "names", {}) or {})
    if model_classes and model_classes != dataset.nc:
        warn(f"the model knows {model_classes} classes, the dataset {dataset.nc}: metrics compare class ids as they are")
    names = getattr(metrics, "names", {}) or {}
    per_class = {}
    for class_id in list(getattr(metrics.box, "ap_class_index", [])):
        per_class[str(names.get(int(class_id), class_id))] = float(metrics.box.maps[int(class_id)])
    summary = summaries[config.split]
    result: dict[str, Any] = {
        "status": "completed",
        "model": source.as_dict(),
        "folder": str(folder),
        "dataset": str(dataset.yaml_path),
        "resolved_dataset": "data.yaml",
        "split": config.split,
        "metrics": {k: scores.get(k) for k in ("mAP50", "mAP50-95", "precision", "recall")},
        "fitness": scores.get("fitness"),
        "model_classes": model_classes,
        "dataset_classes": dataset.nc,
        "per_class_mAP50-95": per_class,
        "images": summary.usable,
        "instances": summary.instances,
        "bad_labels": [p.as_skip() for p in summary.problems],
        "speed_ms_per_image": {k: round(float(v), 3) for k, v in (getattr(metrics, "speed", {}) or {}).items()},
        "imgsz": int(values["imgsz"]),
        "device": device.as_dict(),
        "ultralytics_settings_file": str(settings_file()),
        "wall_time_seconds": round(time.time() - started, 3),
        "library_versions": library_versions(),
    }
    if config.export:
        from .export import export_with_parity

        if source.kind != "weights":
            raise ConfigError(f"--export with validation needs .pt weights as --model (got {source.requested})")
        images = dataset.images(config.split)
        result["export"] = export_with_parity(
            source.load, fmt=config.export, imgsz=int(values["imgsz"]), image=images[0],
            tolerance=config.export_tolerance, target=folder / (Path(source.load).stem + ".onnx"), offline=config.offline,
        )
    atomic_write_json(folder / VALIDATION_JSON, result)
    return ValidationRun(folder, result)


def print_summary(result: dict[str, Any]) -> None:
    print_table(
        "detect val",
        ["field", "value"],
        [("folder", result["folder"]), ("model", result["model"]["load"]), *[(k, v) for k, v in result["metrics"].items()],
         ("images", result["images"]), ("instances", result["instances"])],
    )
