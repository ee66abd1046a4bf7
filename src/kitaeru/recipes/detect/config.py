"""Config of ``kitaeru detect``: the schemas of its modes, the GPU-tier table, the model memory figures.

Each knob is declared once, here, with its command-line spellings (the guides' ``-d/--dataset``,
``-o/--output``, ``--batch``, ``--imgsz`` stay as aliases of ``--data-dir``, ``--output-dir``,
``--batch-size``, ``--image-size``; the earlier ``--run-prefix`` of ``--name``).

Where a training run's resource knobs (model, batch size, image size, workers, cache, epochs,
patience) come from, later wins:

1. the tier's row of :data:`TIER_TABLE` (the detected GPU tier, or ``--gpu-tier``); with
   ``--no-auto-scale`` the guide's competition values (:data:`FIXED_PLAN`) instead;
2. on CUDA, when no batch size was set, a batch computed from free GPU memory;
3. values that are set: top-level fields of the config (``None`` = not set), whether they come
   from a preset (``--fast``, ``--cfg-name``, ``--config``), a flag or ``key=value``; a
   ``key=value`` that is not a field (``lr0=0.01``) goes to Ultralytics as a training argument.

``train:`` holds Ultralytics' other training settings (optimizer, augmentation) under Ultralytics'
own names (``lr0``, ``amp`` ...), handed to it as they are; a ``key=value`` Ultralytics argument
wins over it. Light imports only: the CLI imports this module for ``--help``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, Field, model_validator

from kitaeru.core.config import MAX_IMAGE_SIZE, Epochs, RecipeConfig, RunName, resolve_key, setting
from kitaeru.core.device import GpuTier
from kitaeru.core.run_dirs import RESULT_JSON
from kitaeru.core.run_setup import RunLayout, weights_file_run
from kitaeru.core.tracking import TrackingSettings, tracking_section

RECIPE = "detect"

# The knobs a resource plan decides (and the OOM ladder turns), by the names Ultralytics takes them
# under; the TrainConfig field that sets each has that name or declares it as an alias (batch ->
# batch_size, imgsz -> image_size), so the schema alone says which field is which knob.
PLAN_KEYS = ("model", "batch", "imgsz", "workers", "cache", "epochs", "patience")

# The guide's tier table: VRAM class -> what fits and trains well.
TIER_TABLE: dict[GpuTier, dict[str, Any]] = {
    GpuTier.LOW: {"model": "yolov8s.pt", "batch": 8, "imgsz": 480, "workers": 4, "cache": False, "epochs": 40, "patience": 8},
    GpuTier.MEDIUM: {"model": "yolov8m.pt", "batch": 16, "imgsz": 640, "workers": 8, "cache": True, "epochs": 50, "patience": 10},
    GpuTier.HIGH: {"model": "yolov8l.pt", "batch": 32, "imgsz": 640, "workers": 8, "cache": True, "epochs": 50, "patience": 10},
    GpuTier.WORKSTATION: {"model": "yolov8x.pt", "batch": 64, "imgsz": 800, "workers": 8, "cache": True, "epochs": 50, "patience": 10},
    GpuTier.CPU: {"model": "yolov8n.pt", "batch": 4, "imgsz": 320, "workers": 2, "cache": False, "epochs": 30, "patience": 5},
}

# ``--no-auto-scale``: the guide's COMPETITION_CONFIG values, whatever the machine.
FIXED_PLAN: dict[str, Any] = {"model": "yolov8m.pt", "batch": 16, "imgsz": 640, "workers": 8, "cache": True,
                              "epochs": 50, "patience": 10}

# Per model size: fixed overhead (GB) and memory per sample at 640 px (MB), for the free-memory batch.
MODEL_MEMORY: dict[str, tuple[float, float]] = {
    "n": (1.2, 180.0),
    "s": (1.8, 250.0),
    "m": (2.5, 380.0),
    "l": (3.5, 550.0),
    "x": (5.0, 750.0),
}

# The OOM ladder's "smaller model" step walks this chain (matched on the model's name).
MODEL_CHAIN: dict[str, str] = {"yolov8x": "yolov8l", "yolov8l": "yolov8m", "yolov8m": "yolov8s", "yolov8s": "yolov8n"}

# Image sizes the "smaller image" step steps down through.
IMAGE_SIZES = (1280, 1024, 800, 640, 480, 320)

DEFAULT_OUTPUT = "models/finetuned"


def _is_run(folder: Path) -> bool:
    return (folder / RESULT_JSON).is_file()


# How detect's training runs sit on disk: <output-dir>/train, train2 ... (a given name is numbered
# the same way, as Ultralytics' name= is); --resume latest finds the newest unfinished one, and a
# resumed run keeps the data, model and epochs Ultralytics' checkpoint was made with.
TRAIN_RUNS = RunLayout(
    recipe=RECIPE, what="detect", is_run=_is_run, locate=weights_file_run(".pt"), default_name="train", unfinished_only=True,
    pinned={"data_dir": "--data-dir", "model": "--model", "epochs": "--epochs"}, name_setting="--name",
    numbered_names=True, marker=RESULT_JSON,
)

TierName = Literal["low", "medium", "high", "workstation", "cpu"]


class CopyPasteParams(RecipeConfig):
    """Parameters of the copy-paste synthesis (the guide's defaults)."""

    scale_min: float = Field(0.5, gt=0, description="Smallest scale factor applied to an object's own size.")
    scale_max: float = Field(1.5, gt=0, description="Largest scale factor applied to an object's own size.")
    rotation_degrees: float = Field(15.0, ge=0, le=180, description="Objects are rotated uniformly within ±this angle.")
    flip_probability: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip per object.")
    objects_min: int = Field(1, ge=1, description="Fewest objects pasted per synthetic image.")
    objects_max: int = Field(3, ge=1, description="Most objects pasted per synthetic image.")
    max_overlap_iou: float = Field(0.1, ge=0, le=1, description="A new object's box may overlap an earlier one by at most this IoU.")
    edge_blur_sigma: float = Field(2.0, ge=0, description="Gaussian blur (pixels) applied to the alpha edge so the paste blends in.")
    color_match_strength: float = Field(
        0.5, ge=0, le=1, description="How far each object's colour mean/contrast moves toward the background under it (0 = none, 1 = full)."
    )
    max_object_fraction: float = Field(
        0.6, gt=0, le=1, description="An object is shrunk so its longer side is at most this fraction of the background's shorter side."
    )
    placement_attempts: int = Field(30, ge=1, description="Random positions tried per object before it is dropped for overlapping.")
    jpeg_quality: int = Field(95, ge=50, le=100, description="JPEG quality of the synthetic images.")
    seed: int = Field(0, description="Random seed: the same inputs, parameters and seed give the same images.")

    @model_validator(mode="after")
    def _ranges(self) -> "CopyPasteParams":
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min {self.scale_min} is larger than scale_max {self.scale_max}")
        if self.objects_min > self.objects_max:
            raise ValueError(f"objects_min {self.objects_min} is larger than objects_max {self.objects_max}")
        return self


class TrainSettings(RecipeConfig):
    """Ultralytics' training settings besides the resource knobs (the guide's optimizer and augmentation tables)."""

    optimizer: str = Field("AdamW", description="Optimizer (SGD, Adam, AdamW, NAdam, RAdam, RMSprop, auto).")
    lr0: float = Field(0.001, gt=0, description="Initial learning rate.")
    lrf: float = Field(0.01, gt=0, le=1, description="Final learning rate as a fraction of lr0.")
    momentum: float = Field(0.937, ge=0, lt=1, description="Momentum (Adam beta1).")
    weight_decay: float = Field(0.0005, ge=0, description="Weight decay.")
    warmup_epochs: float = Field(3.0, ge=0, description="Warm-up epochs.")
    amp: bool = Field(True, description="Mixed precision on GPU (Ultralytics checks it and falls back when unsafe).")
    close_mosaic: int = Field(10, ge=0, description="Turn mosaic off for the last N epochs.")
    save_period: int = Field(10, description="Also save weights/epochN.pt every N epochs (-1: never).")
    hsv_h: float = Field(0.015, ge=0, le=1, description="Hue jitter (fraction).")
    hsv_s: float = Field(0.7, ge=0, le=1, description="Saturation jitter (fraction).")
    hsv_v: float = Field(0.4, ge=0, le=1, description="Value (brightness) jitter (fraction).")
    degrees: float = Field(10.0, ge=0, le=180, description="Rotation augmentation (± degrees).")
    translate: float = Field(0.1, ge=0, le=1, description="Translation augmentation (± fraction).")
    scale: float = Field(0.5, ge=0, description="Scale augmentation (gain ±).")
    fliplr: float = Field(0.5, ge=0, le=1, description="Horizontal flip probability.")
    mosaic: float = Field(1.0, ge=0, le=1, description="Mosaic probability.")
    mixup: float = Field(0.1, ge=0, le=1, description="MixUp probability.")


# ---- fields shared by several modes (one declaration each) ------------------------------------

def _data_dir(required_for: str):
    return setting(None, f"YOLO data.yaml of the dataset ({required_for}).", aliases=["dataset", "data"], short="-d",
                   metavar="DATA_YAML")


def _output_dir(what: str):
    return setting(DEFAULT_OUTPUT, f"Folder that receives {what}.", aliases=["output"], short="-o")


def _image_size(default_from: str):
    return setting(None, f"Image size in pixels, square (default: {default_from}).", aliases=["imgsz"], ge=32, le=MAX_IMAGE_SIZE)


_DEVICE = ("Device: auto|cpu|mps|cuda|cuda:N, or Ultralytics' GPU list: 0,1 (DDP on those GPUs; train only), "
           "-1 (the most idle GPU), -1,-1 (the two most idle).")
_TRUST = ("Load a .pt that names code outside the Ultralytics model classes (it can run code; only for files you "
          "trust).")
_GPU_LIST = re.compile(r"^(-1|\d+)(,(-1|\d+))*$")
_DEVICE_NAMES = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def is_gpu_list(device: str) -> bool:
    """Whether ``device`` is one of Ultralytics' own GPU strings (``0``, ``0,1``, ``-1``, ``-1,-1``)."""
    return bool(_GPU_LIST.match(str(device).replace(" ", "")))


def check_device(device: str) -> None:
    """Refuse (one line naming ``--device``) a value neither torch's names nor Ultralytics' GPU list;
    whether the GPUs exist is checked when torch is loaded (:func:`.evaluation.resolve_detect_device`)."""
    from kitaeru.core.errors import ConfigError

    value = str(device).strip().lower()
    if not (_DEVICE_NAMES.match(value) or is_gpu_list(value)):
        raise ConfigError(f"--device {device}: expected auto, cpu, mps, cuda, cuda:N, or GPU indices such as 0,1 "
                          "(-1 = the most idle GPU)")
_OFFLINE = "Keep Ultralytics offline: no downloads (fonts, AMP-check weights, named weights)."
_HOME = "Use Ultralytics' settings file in your home instead of kitaeru's private one."


def _device_text(value: Any) -> Any:
    """``device=0`` / ``device=-1`` (Ultralytics' spelling, a YAML number) as the string ``"0"`` / ``"-1"``."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# The device setting of every detect mode: text, with Ultralytics' numeric spellings accepted.
DeviceText = Annotated[str, BeforeValidator(_device_text)]


# Settings renamed to the vocabulary every recipe shares: earlier spelling -> field.
EARLIER_NAMES = {"run_prefix": "name"}


class TrainConfig(RecipeConfig):
    """``kitaeru detect train``: YOLOv8 fine-tuning on Ultralytics."""

    data_dir: Optional[str] = _data_dir("required")
    model: Optional[str] = setting(
        None, "Base model: .pt weights, a .yaml architecture for random init, or a name such as yolov8m (default: from the GPU tier).",
        short="-m")
    output_dir: str = _output_dir("the run folder (train, train2, ... or the preset's name)")
    # ``name`` as in Ultralytics' ``name=``; ``run_prefix`` (its earlier spelling) stays accepted on the
    # command line, in YAML files and in the config.yaml of runs saved before the rename (below).
    name: Optional[RunName] = setting(None, "Name of the run folder (default: the preset's name, else 'train'); numbered 2, 3, ... when taken.",
                                      aliases=["run-prefix"], min_length=1)
    epochs: Optional[Epochs] = setting(None, "Epochs (default: from the GPU tier).")
    batch_size: Optional[int] = setting(None, "Images per batch (default: from the GPU tier and free GPU memory).",
                                        aliases=["batch"], ge=1)
    image_size: Optional[int] = _image_size("from the GPU tier")
    workers: Optional[int] = setting(None, "Data-loader workers (default: from the GPU tier).", ge=0)
    cache: Optional[bool] = setting(None, "Cache decoded images in RAM (default: from the GPU tier).")
    patience: Optional[int] = setting(None, "Early-stopping patience in epochs (default: from the GPU tier).", ge=0)
    auto_scale: bool = setting(True, "Size model/batch/image/workers/cache/epochs/patience from the GPU tier "
                                     "(off: the guide's competition values).")
    gpu_tier: Optional[TierName] = setting(None, "GPU tier to plan for (default: detected).")
    device: DeviceText = setting("auto", _DEVICE)
    resume: Optional[str] = setting(None, "Continue an interrupted run: its folder, its weights/last.pt, or 'latest' "
                                          "(the newest unfinished run under --output-dir); --resume alone = latest.",
                                    flag_value="latest", metavar="[RUN|latest]")
    exist_ok: bool = setting(False, "Write into the run folder's own name even when it holds a run (no train2, ...).")
    validate_only: bool = setting(False, "Only validate --model on the dataset's val split (= kitaeru detect val).")
    llrd: bool = setting(False, "Layer-wise learning-rate decay: lr = base x decay^depth, head = depth 0.")
    llrd_decay_rate: float = setting(0.9, "LLRD decay per layer.", gt=0, le=1)
    tensorboard: bool = setting(True, "Write TensorBoard scalars under the run folder and serve them.")
    tensorboard_port: int = setting(6006, "Port of the TensorBoard server (0 = any free port); a TensorBoard already "
                                          "answering there is reused.", ge=0, le=65535)
    oom_recovery: bool = setting(True, "Recover from out-of-memory: smaller batch, image, no cache, fewer workers, "
                                       "smaller model; resumes from last.pt.")
    oom_max_steps: int = setting(5, "Most out-of-memory recovery steps before giving up.", ge=0)
    dynamic_synthetic: bool = setting(True, "Add copy-paste synthetic images (needs --backgrounds-dir and --annotated-dir).")
    backgrounds_dir: Optional[str] = setting(None, "Folder of background images for copy-paste synthesis.")
    annotated_dir: Optional[str] = setting(None, "Folder of objects to paste: <class name>/ with image+mask or RGBA cut-outs.")
    synthetic_ratio: float = setting(2.0, "Synthetic images per real training image.", ge=0)
    synthetic: CopyPasteParams = setting(default_factory=CopyPasteParams, description="Copy-paste synthesis parameters.")
    synthetic_cache_dir: Optional[str] = setting(None, "Cache of synthetic sets (default: <output-dir>/synthetic_cache).")
    export: Optional[Literal["onnx"]] = setting(None, "Export best.pt after training, checked with onnxruntime.")
    export_tolerance: float = setting(1e-2, "Largest acceptable onnxruntime-vs-PyTorch difference of the export.", gt=0)
    seed: int = setting(0, "Random seed handed to Ultralytics.")
    trust_checkpoint: bool = setting(False, _TRUST)
    offline: bool = setting(True, _OFFLINE)
    ultralytics_home_settings: bool = setting(False, _HOME)
    tracking: TrackingSettings = tracking_section()
    train: TrainSettings = setting(default_factory=TrainSettings, description="Ultralytics' other training settings.")
    ultralytics: dict[str, Any] = setting(default_factory=dict, description="Extra Ultralytics training arguments "
                                                                            "(any key=value that is not a setting).")

    @model_validator(mode="before")
    @classmethod
    def _earlier_spellings(cls, data: Any) -> Any:
        """A YAML file (a user's, or an old run's config.yaml given to --config) may still spell a
        setting the earlier way; a value under the current name (a flag over that file) wins."""
        if isinstance(data, dict) and any(old in data for old in EARLIER_NAMES):
            data = dict(data)
            for old, new in EARLIER_NAMES.items():
                if old in data:
                    value = data.pop(old)
                    data.setdefault(new, value)
        return data

    def plan_value(self, key: str) -> Any:
        """The value set for a plan knob (Ultralytics' name), or None."""
        return getattr(self, plan_field(key))


def plan_field(key: str) -> str:
    """The TrainConfig field that sets the plan knob ``key`` (its own name or a declared alias)."""
    return resolve_key(TrainConfig, key)


class ValConfig(RecipeConfig):
    """``kitaeru detect val``: metrics of a model on a dataset split."""

    model: Optional[str] = setting(None, "Model to validate: .pt weights (default: the GPU tier's model).", short="-m")
    data_dir: Optional[str] = _data_dir("required")
    output_dir: str = _output_dir("the validation folder (val, val2, ...)")
    image_size: Optional[int] = _image_size("from the GPU tier")
    batch_size: Optional[int] = setting(None, "Images per batch (default: from the GPU tier).", aliases=["batch"], ge=1)
    workers: Optional[int] = setting(None, "Data-loader workers (default: from the GPU tier).", ge=0)
    split: Literal["val", "test", "train"] = setting("val", "Split of the data.yaml to validate on.")
    gpu_tier: Optional[TierName] = setting(None, "GPU tier to plan for (default: detected).")
    device: DeviceText = setting("auto", _DEVICE)
    export: Optional[Literal["onnx"]] = setting(None, "Also export the model, checked with onnxruntime.")
    export_tolerance: float = setting(1e-2, "Largest acceptable onnxruntime-vs-PyTorch difference of the export.", gt=0)
    trust_checkpoint: bool = setting(False, _TRUST)
    offline: bool = setting(True, _OFFLINE)
    ultralytics_home_settings: bool = setting(False, _HOME)
    ultralytics: dict[str, Any] = setting(default_factory=dict, description="Extra Ultralytics validation arguments "
                                                                            "(conf, iou, max_det, half, rect).")


class PredictConfig(RecipeConfig):
    """``kitaeru detect predict``: detections drawn on images and written as YOLO txt labels."""

    model: Optional[str] = setting(None, "Trained model: .pt weights or an exported .onnx (required).", short="-m")
    source: Optional[str] = setting(None, "An image, a folder of images, a glob or a video (required).", short="-s")
    output_dir: str = _output_dir("the prediction folder (predict, predict2, ...)")
    image_size: Optional[int] = _image_size("the size the model was trained or exported at")
    conf: float = setting(0.25, "Smallest confidence of a kept detection.", ge=0, le=1)
    iou: float = setting(0.7, "IoU threshold of non-maximum suppression.", ge=0, le=1)
    max_det: int = setting(300, "Most detections per image.", ge=1)
    save_images: bool = setting(True, "Write each image with its detections drawn.")
    save_txt: bool = setting(True, "Write YOLO txt labels (class cx cy w h, normalised) under labels/.")
    save_conf: bool = setting(False, "Add the confidence as a sixth column of the txt labels.")
    device: DeviceText = setting("auto", _DEVICE)
    trust_checkpoint: bool = setting(False, _TRUST)
    offline: bool = setting(True, _OFFLINE)
    ultralytics_home_settings: bool = setting(False, _HOME)
    ultralytics: dict[str, Any] = setting(default_factory=dict, description="Extra Ultralytics prediction arguments "
                                                                            "(classes, agnostic_nms, line_width, ...).")


class ExportConfig(RecipeConfig):
    """``kitaeru detect export``: ONNX export of trained weights, checked against PyTorch with onnxruntime."""

    model: Optional[str] = setting(None, "Trained .pt weights to export (required).", short="-m")
    format: Literal["onnx"] = setting("onnx", "Export format.")
    image_size: Optional[int] = _image_size("the size the model was trained at, else 640")
    output: Optional[str] = setting(None, "Where to write the exported file (default: beside the weights, .onnx).",
                                    short="-o")
    data_dir: Optional[str] = setting(None, "A YOLO data.yaml whose first val image is the parity check's input "
                                            "(default: an image shipped with Ultralytics).", aliases=["dataset", "data"],
                                      short="-d", metavar="DATA_YAML")
    image: Optional[str] = setting(None, "An image for the parity check (wins over --data-dir).")
    tolerance: float = setting(1e-2, "Largest acceptable onnxruntime-vs-PyTorch difference.",
                               aliases=["export-tolerance"], gt=0)
    trust_checkpoint: bool = setting(False, _TRUST)
    offline: bool = setting(True, _OFFLINE)
    ultralytics_home_settings: bool = setting(False, _HOME)
