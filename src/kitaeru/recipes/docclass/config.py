"""Config schema of the document classifier (seed 003): data, augmentation, model, loss, optimiser,
training and the ``onnx:`` export section.

Shipped presets live in ``kitaeru/configs/docclass/`` (``lcnet050_cosface_96`` reproduces the
seed's config). Light imports only: this module is read by the CLI before anything heavy loads.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from kitaeru.core.config import RecipeConfig
from kitaeru.export.onnx import OnnxSpec

RECIPE = "docclass"
ROTATIONS = (0, 90, 180, 270)
FLIP_STATES = ("none", "horizontal", "vertical")


class DataSection(RecipeConfig):
    data_dir: Optional[str] = Field(
        None,
        description="Template pool: a folder (searched recursively, local or fsspec URL) of document images, "
        "each one a template. Not given: generated sample templates (see sample_templates).",
    )
    sample_templates: int = Field(20, ge=1, description="How many synthetic templates to generate when data_dir is not given.")
    image_size: int = Field(96, ge=16, le=1024, description="Side of the square network input in pixels.")
    template_side: int = Field(
        256, ge=32, description="Longest side the templates are kept at in memory; augmentations start from this size."
    )
    rotations: list[int] = Field(list(ROTATIONS), description="Rotations (degrees, multiples of 90) that make classes of each template.")
    flips: list[Literal["none", "horizontal", "vertical"]] = Field(
        list(FLIP_STATES), description="Flip states that make classes of each template: rotations × flips (4×3 = 12) pairs, of which "
        "the geometrically identical ones (vertical flip = horizontal flip + 180°) share a class, leaving 8."
    )
    train_samples_per_class: int = Field(16, ge=1, description="Augmented training images drawn per class and epoch.")
    val_samples_per_class: int = Field(2, ge=2, description="Held-out augmented validation images per class (fixed draws).")
    workers: Optional[int] = Field(None, ge=0, description="Data-loader worker processes (not given: from the resource plan).")

    @field_validator("rotations")
    @classmethod
    def _quarter_turns(cls, value: list[int]) -> list[int]:
        bad = [r for r in value if r not in ROTATIONS]
        if bad or not value or len(set(value)) != len(value):
            raise ValueError(f"rotations must be distinct values among {list(ROTATIONS)}, got {value}")
        return value

    @field_validator("flips")
    @classmethod
    def _distinct_flips(cls, value: list[str]) -> list[str]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"flips must be distinct and not empty, got {value}")
        return value


class AugmentSection(RecipeConfig):
    perspective: float = Field(0.3, ge=0, le=0.9, description="Perspective-warp distortion scale (0 = none).")
    margin: float = Field(0.15, ge=0, le=1, description="Largest background margin around the document, as a fraction of its size.")
    crop_scale: tuple[float, float] = Field((0.85, 1.0), description="Random crop area range (fractions of the photo).")
    blur_p: float = Field(0.3, ge=0, le=1, description="Probability of a Gaussian blur.")
    noise_std: float = Field(0.03, ge=0, le=1, description="Largest standard deviation of additive Gaussian noise (0–1 pixel scale).")
    brightness: float = Field(0.3, ge=0, description="Lighting: brightness jitter.")
    contrast: float = Field(0.3, ge=0, description="Lighting: contrast jitter.")
    saturation: float = Field(0.3, ge=0, description="Lighting: saturation jitter.")
    hue: float = Field(0.05, ge=0, le=0.5, description="Lighting: hue jitter.")
    jpeg_quality: tuple[int, int] = Field((30, 95), description="JPEG re-compression quality range.")
    jpeg_p: float = Field(0.5, ge=0, le=1, description="Probability of a JPEG re-compression.")
    shadow_p: float = Field(0.4, ge=0, le=1, description="Probability of a soft shadow across the photo.")
    scan_p: float = Field(0.1, ge=0, le=1, description="Probability of a flat scan (whole page, no background or warp) instead of a photo.")

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {list(value)}")
        return value

    @field_validator("jpeg_quality")
    @classmethod
    def _quality_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        lo, hi = value
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"jpeg_quality must satisfy 1 <= low <= high <= 100, got {list(value)}")
        return value


class ModelSection(RecipeConfig):
    backbone: str = Field("lcnet_050", description="timm backbone name, used as a feature extractor (its last stage).")
    pretrained: str = Field(
        "default",
        description="Backbone weights: 'default' (timm's hub weights), 'none' (random init) or a local weights file.",
    )
    relu: bool = Field(True, description="Replace the backbone's Hardswish by ReLU (quantisation friendly, as in the seed).")
    embedding_dim: int = Field(128, ge=8, description="Size of the L2-normalised feature.")


class LossSection(RecipeConfig):
    name: Literal["cosface", "arcface"] = Field("cosface", description="Margin loss from pytorch-metric-learning.")
    scale: float = Field(64.0, gt=0, description="Logit scale s.")
    margin: float = Field(
        0.4, ge=0, description="Margin m: cosine margin for CosFace (0.4); angular margin in degrees for ArcFace (28.6 = 0.5 rad)."
    )


class OptimSection(RecipeConfig):
    lr: float = Field(1e-3, gt=0, description="AdamW peak learning rate.")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warm-up length in epochs (fractions allowed).")
    power: float = Field(1.0, gt=0, description="Exponent of the polynomial decay after warm-up.")
    loss_lr_scale: float = Field(1.0, gt=0, description="Learning-rate multiplier for the margin loss's class weights.")


class TrainSection(RecipeConfig):
    epochs: int = Field(20, ge=1, description="Training epochs.")
    batch_size: Optional[int] = Field(None, ge=2, description="Batch size (not given: from the GPU-tier table; the seed used 256).")
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field("32", description="Lightning precision.")
    gradient_clip: float = Field(5.0, ge=0, description="Gradient-norm clipping value (0 = off).")
    device: str = Field("auto", description="Device: auto|cuda|cuda:N|mps|cpu.")
    output_dir: str = Field("runs/docclass", description="Local folder that receives one run folder per training run.")
    monitor: Literal["val_auroc", "val_tpr_fpr1e-4", "val_tpr_fpr1e-3", "val_tpr_fpr1e-2", "val_tpr_fpr1e-1"] = Field(
        "val_auroc", description="Validation metric that picks the best checkpoint."
    )
    threshold_fpr: float = Field(1e-3, gt=0, lt=1, description="False-positive rate whose ROC threshold becomes the 'unknown' threshold.")
    oom_recovery: bool = Field(True, description="On out-of-memory, halve the batch / workers and resume from the last checkpoint.")
    seed: int = Field(42, description="Random seed (weights, sample templates, validation draws).")


class DocclassConfig(RecipeConfig):
    """Everything a docclass run needs; ``--cfg-name`` picks a shipped preset."""

    name: str = Field("docclass", description="Name of this config; prefixes run folders.")
    data: DataSection = Field(default_factory=DataSection, description="Template pool and class scheme.")
    augment: AugmentSection = Field(default_factory=AugmentSection, description="Synthetic photo augmentations.")
    model: ModelSection = Field(default_factory=ModelSection, description="Backbone and head.")
    loss: LossSection = Field(default_factory=LossSection, description="Margin loss.")
    optim: OptimSection = Field(default_factory=OptimSection, description="Optimiser and LR schedule.")
    train: TrainSection = Field(default_factory=TrainSection, description="Training loop.")
    onnx: OnnxSpec = Field(
        default_factory=lambda: OnnxSpec(
            name="WarpFeatureLearning",
            input_shape={"img": {"shape": [1, 3, 96, 96], "dtype": "float32"}},
            input_names=["img"],
            output_names=["feats"],
            dynamic_axes={"img": {0: "batch_size"}, "feats": {0: "batch_size"}},
        ),
        description="ONNX export of the inference branch (backbone + head).",
    )

    @model_validator(mode="after")
    def _onnx_matches_image_size(self) -> "DocclassConfig":
        if len(self.onnx.input_names) != 1:
            raise ValueError(f"onnx.input_names: the feature model has one input, got {self.onnx.input_names}")
        if len(self.onnx.output_names) != 1:
            raise ValueError(f"onnx.output_names: the feature model has one output, got {self.onnx.output_names}")
        shape = self.onnx.input_shape[self.onnx.input_names[0]].shape
        size = self.data.image_size
        if len(shape) == 4 and shape[2:] != [size, size]:
            raise ValueError(
                f"onnx.input_shape spatial size {shape[2:]} differs from data.image_size {size} (--image-size sets both)"
            )
        return self

    def with_image_size(self, size: int) -> "DocclassConfig":
        """This config trained/exported at ``size``: ``data.image_size`` and the ONNX input's spatial dims."""
        data = self.model_dump()
        data["data"]["image_size"] = size
        name = self.onnx.input_names[0]
        shape = list(data["onnx"]["input_shape"][name]["shape"])
        data["onnx"]["input_shape"][name]["shape"] = shape[:-2] + [size, size] if len(shape) >= 2 else shape
        return DocclassConfig.model_validate(data)


# The fields that define the network's weights: a checkpoint only fits a config that agrees on them.
ARCHITECTURE_FIELDS = ("model.backbone", "model.relu", "model.embedding_dim")
