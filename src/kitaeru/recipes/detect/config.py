"""Config of ``kitaeru detect``: the schema, the GPU-tier table and the model memory figures (seed 002).

Precedence of the resource knobs (model, batch, imgsz, workers, cache, epochs, patience):
``train:`` section (schema defaults or a preset) < the tier's row (unless ``auto_scale`` is off)
< batch refined from free GPU memory < explicit values (top-level fields, command-line flags,
``key=value`` Ultralytics arguments). Everything else in ``train:`` goes to Ultralytics as is.
Light imports only: the CLI imports this module to build its options.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field

from kitaeru.core.config import RecipeConfig
from kitaeru.core.device import GpuTier
from kitaeru.data.copy_paste import CopyPasteParams

RECIPE = "detect"

# The knobs a resource plan decides (and the OOM ladder turns).
PLAN_KEYS = ("model", "batch", "imgsz", "workers", "cache", "epochs", "patience")

# Seed 002's tier table (REFERENCE.md): VRAM class -> what fits and trains well.
TIER_TABLE: dict[GpuTier, dict[str, Any]] = {
    GpuTier.LOW: {"model": "yolov8s.pt", "batch": 8, "imgsz": 480, "workers": 4, "cache": False, "epochs": 40, "patience": 8},
    GpuTier.MEDIUM: {"model": "yolov8m.pt", "batch": 16, "imgsz": 640, "workers": 8, "cache": True, "epochs": 50, "patience": 10},
    GpuTier.HIGH: {"model": "yolov8l.pt", "batch": 32, "imgsz": 640, "workers": 8, "cache": True, "epochs": 50, "patience": 10},
    GpuTier.WORKSTATION: {"model": "yolov8x.pt", "batch": 64, "imgsz": 800, "workers": 8, "cache": True, "epochs": 50, "patience": 10},
    GpuTier.CPU: {"model": "yolov8n.pt", "batch": 4, "imgsz": 320, "workers": 2, "cache": False, "epochs": 30, "patience": 5},
}

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

# Image sizes the "smaller image" step steps down through (seed 002).
IMAGE_SIZES = (1280, 1024, 800, 640, 480, 320)

TierName = Literal["low", "medium", "high", "workstation", "cpu"]


class TrainSettings(RecipeConfig):
    """Ultralytics training settings (seed 002's parameter tables); the resource plan overrides its knobs."""

    model: str = Field("yolov8m.pt", description="Base model: .pt weights, a .yaml architecture (random init) or a name.")
    epochs: int = Field(50, ge=1, description="Training epochs.")
    batch: int = Field(16, ge=1, description="Images per batch.")
    imgsz: int = Field(640, ge=32, description="Training/validation image size (pixels, square).")
    patience: int = Field(10, ge=0, description="Early-stopping patience (epochs without improvement).")
    workers: int = Field(8, ge=0, description="Data-loader worker processes.")
    cache: bool = Field(True, description="Cache decoded images in RAM.")
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


class DetectConfig(RecipeConfig):
    """``kitaeru detect train``: YOLOv8 fine-tuning on Ultralytics (seed 002)."""

    dataset: Optional[str] = Field(None, description="YOLO data.yaml of the dataset (required).")
    model: Optional[str] = Field(
        None, description="Base model: .pt weights, a .yaml architecture for random init, or a name such as yolov8m (default: from the GPU tier)."
    )
    output: str = Field("models/finetuned", description="Folder that receives the run folder <prefix>_YYYYMMDD_HHMMSS/.")
    run_prefix: str = Field("competition", min_length=1, description="Prefix of the run folder's name (set by the preset).")
    epochs: Optional[int] = Field(None, ge=1, description="Epochs (overrides the tier and preset).")
    batch: Optional[int] = Field(None, ge=1, description="Batch size (overrides the tier, the free-memory estimate and the preset).")
    imgsz: Optional[int] = Field(None, ge=32, description="Image size in pixels (overrides the tier and preset).")
    workers: Optional[int] = Field(None, ge=0, description="Data-loader workers (overrides the tier and preset).")
    cache: Optional[bool] = Field(None, description="Cache images in RAM (overrides the tier and preset).")
    patience: Optional[int] = Field(None, ge=0, description="Early-stopping patience (overrides the tier and preset).")
    auto_scale: bool = Field(True, description="Size model/batch/image/workers/cache/epochs/patience from the GPU tier.")
    gpu_tier: Optional[TierName] = Field(None, description="GPU tier to plan for: low|medium|high|workstation|cpu (default: detected).")
    device: str = Field("auto", description="Device: auto|cuda|cuda:N|mps|cpu.")
    llrd: bool = Field(False, description="Layer-wise learning-rate decay: lr = base x decay^depth, head = depth 0.")
    llrd_decay_rate: float = Field(0.9, gt=0, le=1, description="LLRD decay per layer.")
    tensorboard: bool = Field(True, description="Write TensorBoard scalars under the run folder and serve them.")
    tensorboard_port: int = Field(6006, ge=0, le=65535, description="Port of the TensorBoard server (0 = any free port).")
    oom_recovery: bool = Field(True, description="Recover from out-of-memory: smaller batch, image, no cache, fewer workers, smaller model; resumes from last.pt.")
    oom_max_steps: int = Field(5, ge=0, description="Most out-of-memory recovery steps before giving up.")
    dynamic_synthetic: bool = Field(True, description="Add copy-paste synthetic images (needs --backgrounds-dir and --annotated-dir).")
    backgrounds_dir: Optional[str] = Field(None, description="Folder of background images for copy-paste synthesis.")
    annotated_dir: Optional[str] = Field(None, description="Folder of objects to paste: <class name>/ with image+mask or RGBA cut-outs.")
    synthetic_ratio: float = Field(2.0, ge=0, description="Synthetic images per real training image.")
    synthetic: CopyPasteParams = Field(default_factory=CopyPasteParams, description="Copy-paste synthesis parameters.")
    synthetic_cache_dir: Optional[str] = Field(None, description="Cache of synthetic sets (default: <output>/synthetic_cache).")
    export: Optional[Literal["onnx"]] = Field(None, description="Export best.pt after training (onnx), checked with onnxruntime.")
    export_tolerance: float = Field(1e-2, gt=0, description="Largest acceptable onnxruntime-vs-PyTorch difference of the export.")
    seed: int = Field(0, description="Random seed handed to Ultralytics.")
    offline: bool = Field(True, description="Keep Ultralytics offline: no downloads (fonts, AMP-check weights, named weights).")
    ultralytics_home_settings: bool = Field(
        False, description="Use Ultralytics' settings file in your home instead of kitaeru's private one."
    )
    train: TrainSettings = Field(default_factory=TrainSettings, description="Ultralytics training settings (the preset's).")
    ultralytics: dict[str, Any] = Field(default_factory=dict, description="Extra Ultralytics training arguments (key=value on the command line).")
