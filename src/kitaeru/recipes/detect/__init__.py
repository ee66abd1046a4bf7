"""``kitaeru detect``: fine-tune a YOLOv8 detector on Ultralytics, check it, use it, ship it.

The story of a detector, in the order a user meets it:

1. **train** (:func:`train`, :mod:`.training`): the ``data.yaml`` and every label file are checked
   (:mod:`.data`); copy-paste synthetic images are added when objects and backgrounds are given
   (:mod:`.copy_paste`); the GPU tier (or ``--gpu-tier``) and free GPU memory decide model, batch
   size, image size, workers, cache, epochs and patience unless set (:mod:`.plan`); Ultralytics
   trains inside an out-of-memory ladder that resumes from ``last.pt`` (:mod:`.session`), with
   kitaeru's evidence written per epoch (:mod:`.evidence`), layer-wise LR decay through its trainer
   and callback API (:mod:`.ultralytics_trainer`, :mod:`.llrd`) and a TensorBoard server
   (:mod:`.tensorboard_server`). The run folder is ``<output-dir>/train`` (``train2``, ...); Ctrl-C
   ends it ``interrupted`` with the command that resumes it.
2. **val** (:func:`val`, :mod:`.evaluation`): mAP50, mAP50-95, precision and recall of a model on a
   split.
3. **predict** (:func:`predict`, :mod:`.inference`): a ``.pt`` or exported ``.onnx`` over images;
   annotated images and YOLO txt labels.
4. **export** (:func:`export`, :mod:`.export`): ONNX, checked against PyTorch with onnxruntime on
   a real image.

Ultralytics runs offline and private (:mod:`.ultralytics_env`, which also lists every patch
kitaeru applies to it). Only this module and :mod:`.config` are light; the rest import
Ultralytics/torch when a command runs.
"""

from __future__ import annotations

from typing import Any

from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe

from .config import ExportConfig, PredictConfig, TrainConfig, ValConfig


def train(config: TrainConfig) -> dict[str, Any]:
    """Fine-tune (or, with ``--resume``, continue; with ``--validate-only``, only validate)."""
    if config.validate_only:
        from .evaluation import val_config_from_train

        return val(val_config_from_train(config))
    if config.resume:
        from .training import resume_detector

        return resume_detector(config).result
    from .training import train_detector

    return train_detector(config).result


def val(config: ValConfig) -> dict[str, Any]:
    """Validate a model on a split of a YOLO dataset."""
    from .evaluation import validate_model

    return validate_model(config).result


def predict(config: PredictConfig) -> dict[str, Any]:
    """Detect objects in images; write annotated images and YOLO txt labels."""
    from .inference import predict_images

    return predict_images(config)


def export(config: ExportConfig) -> dict[str, Any]:
    """Export trained weights to ONNX, checked with onnxruntime."""
    from .export import export_model

    return export_model(config)


def _check_train(config: TrainConfig) -> None:
    if config.validate_only:
        from .evaluation import check_val, val_config_from_train

        check_val(val_config_from_train(config))
        return
    from .training import check_train

    check_train(config)


def _check_val(config: ValConfig) -> None:
    from .evaluation import check_val

    check_val(config)


def _check_predict(config: PredictConfig) -> None:
    from .inference import check_predict

    check_predict(config)


def _check_export(config: ExportConfig) -> None:
    from .export import check_export

    check_export(config)


def write_sample_detection(out: str, *, train: int = 160, val: int = 40, image_size: int = 160, seed: int = 0):
    """The built-in detection sample (drawn shapes in YOLO layout) written to a folder; returns its
    data.yaml (``kitaeru sample detection``)."""
    from kitaeru.recipes.detect.sample_detection import write_sample_detection as write

    return write(out, train=train, val=val, image_size=image_size, seed=seed)


def _summary(module: str):
    def show(result: dict[str, Any]) -> None:
        import importlib

        if result.get("split") and module == "training":  # train --validate-only
            importlib.import_module(f"{__name__}.evaluation").print_summary(result)
            return
        importlib.import_module(f"{__name__}.{module}").print_summary(result)

    return show


RECIPE = Recipe(
    name="detect",
    help=JOBS["detect"],
    modes=[
        Mode(
            "train", TrainConfig, train,
            help="Fine-tune YOLOv8 on a YOLO data.yaml. KEY=VALUE arguments that are not settings go to "
                 "Ultralytics as training arguments (lr0=0.01 cos_lr=true).",
            examples=[
                "kitaeru detect train -d data/shapes/data.yaml --cfg-name cpu_quickstart   # data: kitaeru sample detection --out data/shapes",
                "kitaeru detect train data=data/shapes/data.yaml epochs=3 imgsz=320",
                "kitaeru detect train -d data.yaml --cfg-name competition --llrd --export onnx",
                "kitaeru detect train --resume models/finetuned/train",
            ],
            summary=_summary("training"), check=_check_train, presets=True, passthrough_field="ultralytics",
            preset_switches={"fast": "fast"},
        ),
        Mode(
            "val", ValConfig, val,
            help="Validate a model on a split of a YOLO dataset: mAP50, mAP50-95, precision, recall "
                 "(validation_result.json in <output-dir>/val).",
            examples=["kitaeru detect val --model models/finetuned/train/weights/best.pt --data-dir data.yaml"],
            summary=_summary("evaluation"), check=_check_val, aliases=("validate",), passthrough_field="ultralytics",
        ),
        Mode(
            "predict", PredictConfig, predict,
            help="Detect objects with a .pt or .onnx model: annotated images and YOLO txt labels in "
                 "<output-dir>/predict.",
            examples=["kitaeru detect predict --model models/finetuned/train/weights/best.pt --source images/",
                      "kitaeru detect predict --model best.onnx --source photo.jpg --conf 0.4"],
            summary=_summary("inference"), check=_check_predict, passthrough_field="ultralytics",
        ),
        Mode(
            "export", ExportConfig, export,
            help="Export trained weights to ONNX and check onnxruntime against PyTorch on a real image.",
            examples=["kitaeru detect export --model models/finetuned/train/weights/best.pt --format onnx"],
            summary=_summary("export"), check=_check_export,
        ),
    ],
)
