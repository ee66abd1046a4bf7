"""Config schemas of the document classifier, one per mode; each field is declared once, here.

``DocclassConfig`` mirrors the guide's config (sections ``data``, ``augment``, ``model``, ``loss``,
``optim``, ``train`` and the ``onnx:`` export section); ``--cfg-name`` picks a shipped preset from
``kitaeru/configs/docclass/`` (``lcnet050_cosface_96`` reproduces the original DocClassifier's
config). The fields every job shares are promoted to flags of their own (``--data-dir``,
``--epochs``, ``--lr`` ...); every other one is a dotted ``key=value`` (``augment.perspective=0.2``).
``TrainConfig`` adds the run's own switches (``--resume``, ``--exist-ok``, ``--run-name``), which are
never saved with the config. ``ExportConfig``, ``EvaluateConfig``, ``RegisterConfig`` and
``ClassifyConfig`` are the other modes'. Light imports only: the CLI reads this module to build
``--help`` before anything heavy loads.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, Field, field_validator, model_validator

from kitaeru.core.config import Epochs, RecipeConfig, RunName, setting
from kitaeru.core.distributed import DEVICES_HELP, NUM_NODES_HELP, STRATEGY_HELP, DeviceCount, Strategy
from kitaeru.core.run_dirs import RESULT_JSON
from kitaeru.core.run_setup import CONFIG_YAML, RunLayout, weights_file_run
from kitaeru.core.tracking import TrackingSettings, tracking_section
from kitaeru.export.onnx import OnnxSpec

RECIPE_NAME = "docclass"
ROTATIONS = (0, 90, 180, 270)
FLIP_STATES = ("none", "horizontal", "vertical")


class DataSection(RecipeConfig):
    data_dir: Optional[str] = setting(
        None,
        "Template pool: a folder (searched recursively, local or fsspec URL) of document images, "
        "each one a template. Not given: generated sample templates (see data.sample_templates).",
        aliases=["dataset"], short="-d", promote=True, metavar="DIR",
    )
    sample_templates: int = Field(20, ge=1, le=10_000, description="How many synthetic templates to generate when data_dir is not given.")
    image_size: int = Field(96, ge=16, le=1024, description="Side of the square network input in pixels (--image-size also sets the ONNX input).")
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
    workers: Optional[int] = setting(None, "Data-loader worker processes (not given: from the resource plan).", ge=0, promote=True)

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
    pretrained: str = setting(
        "default", "Backbone weights: 'default' (timm's hub weights), 'none' (random init) or a local weights file.", promote=True,
    )
    relu: bool = Field(True, description="Replace the backbone's Hardswish by ReLU (quantisation friendly, as in the original DocClassifier).")
    embedding_dim: int = Field(128, ge=8, description="Size of the L2-normalised feature.")


class LossSection(RecipeConfig):
    name: Literal["cosface", "arcface"] = setting("cosface", "Margin loss from pytorch-metric-learning.", aliases=["loss"], promote=True)
    scale: float = Field(64.0, gt=0, description="Logit scale s.")
    margin: float = Field(
        0.4, ge=0, description="Margin m: cosine margin for CosFace (0.4); angular margin in degrees for ArcFace (28.6 = 0.5 rad)."
    )


class OptimSection(RecipeConfig):
    learning_rate: float = setting(1e-3, "AdamW peak learning rate.", aliases=["lr"], promote=True, gt=0)
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay.")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warm-up length in epochs (fractions allowed).")
    power: float = Field(1.0, gt=0, description="Exponent of the polynomial decay after warm-up.")
    loss_lr_scale: float = Field(1.0, gt=0, description="Learning-rate multiplier for the margin loss's class weights.")

    @model_validator(mode="before")
    @classmethod
    def _old_spelling(cls, data: Any) -> Any:
        """``lr`` (presets, --config files and the config.yaml of runs written before the rename)
        means ``learning_rate``; next to it (a resume's saved ``lr`` under a given
        ``learning_rate``) the new spelling wins."""
        if isinstance(data, dict) and "lr" in data:
            data = dict(data)
            old = data.pop("lr")
            data.setdefault("learning_rate", old)
        return data


class TrainSection(RecipeConfig):
    epochs: Epochs = setting(20, "Training epochs.", promote=True)
    batch_size: Optional[int] = setting(
        None, "Batch size (not given: from the GPU-tier table; the original used 256).", aliases=["batch"], promote=True, ge=2
    )
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field(
        "32", description="Lightning precision: 32, bf16-mixed or 16-mixed (no, bf16 and fp16 are read as those)."
    )
    gradient_clip: float = Field(5.0, ge=0, description="Gradient-norm clipping value (0 = off).")
    device: str = setting("auto", "Device: auto|cuda|cuda:N|mps|cpu (auto = cuda, then mps, then cpu).", promote=True)
    output_dir: str = setting(
        "runs/docclass", "Local folder that receives one run folder per training run.", aliases=["output"], short="-o",
        promote=True, metavar="DIR",
    )
    monitor: Literal["val_auroc", "val_tpr_fpr1e-4", "val_tpr_fpr1e-3", "val_tpr_fpr1e-2", "val_tpr_fpr1e-1"] = Field(
        "val_auroc", description="Validation metric that picks the best checkpoint."
    )
    threshold_fpr: float = Field(1e-3, gt=0, lt=1, description="False-positive rate whose ROC threshold becomes the 'unknown' threshold.")
    oom_recovery: bool = setting(
        True, "On out-of-memory, halve the batch / workers and resume from the last checkpoint (--no-oom-recovery: stop).",
        promote=True,
    )
    seed: int = setting(42, "Random seed (weights, sample templates, validation draws).", promote=True)

    @field_validator("precision", mode="before")
    @classmethod
    def _other_precision_spellings(cls, value: Any) -> Any:
        # the spellings of the LoRA recipe (and accelerate) mean the same thing here
        return {"no": "32", "32-true": "32", "fp16": "16-mixed", "bf16": "bf16-mixed"}.get(str(value), value)


def default_onnx_spec() -> OnnxSpec:
    """The guide's ``onnx:`` section: the inference branch as ``WarpFeatureLearning``, img -> feats."""
    return OnnxSpec(
        name="WarpFeatureLearning",
        input_shape={"img": {"shape": [1, 3, 96, 96], "dtype": "float32"}},
        input_names=["img"],
        output_names=["feats"],
        dynamic_axes={"img": {0: "batch_size"}, "feats": {0: "batch_size"}},
    )


class DocclassConfig(RecipeConfig):
    """Everything a docclass run needs; ``--cfg-name`` picks a shipped preset."""

    name: RunName = setting("docclass", "Name of this config; the run folder is named after it (name, name2, ...).")
    image_size: Optional[int] = setting(
        None, "Side of the square network input: sets data.image_size and the ONNX input's spatial size together.",
        aliases=["imgsz"], exclude=True,
    )
    data: DataSection = Field(default_factory=DataSection, description="Template pool and class scheme.")
    augment: AugmentSection = Field(default_factory=AugmentSection, description="Synthetic photo augmentations.")
    model: ModelSection = Field(default_factory=ModelSection, description="Backbone and head.")
    loss: LossSection = Field(default_factory=LossSection, description="Margin loss.")
    optim: OptimSection = Field(default_factory=OptimSection, description="Optimiser and LR schedule.")
    train: TrainSection = Field(default_factory=TrainSection, description="Training loop.")
    onnx: OnnxSpec = Field(default_factory=lambda: default_onnx_spec(), description="ONNX export of the inference branch (backbone + head).")

    @model_validator(mode="before")
    @classmethod
    def _image_size_everywhere(cls, data: Any) -> Any:
        """``image_size`` (the --image-size shortcut) moves data.image_size and the ONNX input together."""
        if not isinstance(data, dict) or data.get("image_size") is None:
            return data
        data = dict(data)
        size = data.pop("image_size")
        section = data.get("data")
        section = section.model_dump() if isinstance(section, BaseModel) else dict(section or {})
        section["image_size"] = size
        data["data"] = section
        onnx = data.get("onnx")
        onnx = (onnx if isinstance(onnx, BaseModel) else default_onnx_spec() if onnx is None else None)
        onnx = onnx.model_dump(mode="json") if onnx is not None else copy.deepcopy(dict(data["onnx"]))
        try:
            entry = onnx["input_shape"][(onnx.get("input_names") or ["img"])[0]]
            shape = list(entry["shape"])
            if len(shape) >= 2:
                entry["shape"] = shape[:-2] + [size, size]
        except (KeyError, TypeError, IndexError, AttributeError):
            pass  # a malformed onnx section: validation reports it
        data["onnx"] = onnx
        return data

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
        return DocclassConfig.model_validate({**self.model_dump(), "image_size": size})


# The fields that define the network's weights: a checkpoint only fits a config that agrees on them.
ARCHITECTURE_FIELDS = ("model.backbone", "model.relu", "model.embedding_dim")


def _is_run(folder: Path) -> bool:
    """A docclass run: its config.yaml beside its weights/ or its training_result.json."""
    return (folder / CONFIG_YAML).is_file() and ((folder / "weights").is_dir() or (folder / RESULT_JSON).is_file())


# How docclass runs sit under train.output_dir: the config's name numbered (name, name2, ...; the
# default name below is replaced by config.name), or exactly --run-name.
RUN_LAYOUT = RunLayout(recipe=RECIPE_NAME, what="docclass", is_run=_is_run, locate=weights_file_run(".ckpt"), default_name="docclass",
                       name_setting="--run-name", joins_rank_zero=True)


class TrainConfig(DocclassConfig):
    """``docclass train``: the config above plus this run's own switches (not saved with the config)."""

    resume: Optional[str] = setting(
        None, "Continue a run from its weights/last.ckpt: 'latest' (the newest run under --output-dir; "
        "the default of a bare --resume) or a run folder. Its config.yaml is the base; settings given now win.",
        flag_value="latest", metavar="latest|RUN", exclude=True,
    )
    exist_ok: bool = setting(False, "Allow writing into a --run-name folder that already holds a run (its evidence is replaced).",
                             exclude=True)
    run_name: Optional[RunName] = setting(
        None, "Run folder name under --output-dir (default: the config's name, auto-incremented: name, name2, ...). "
        "A folder that holds a run is refused unless --exist-ok.", exclude=True,
    )
    trust_checkpoint: bool = setting(
        False, "--resume: load weights/last.ckpt even if it holds pickled objects (they can run code; only for files you trust).",
        exclude=True)
    # ---- scaling out (this run's own, like the switches above) ----
    devices: DeviceCount = setting("1", DEVICES_HELP, metavar="N|auto", exclude=True)
    num_nodes: int = setting(1, NUM_NODES_HELP, ge=1, exclude=True)
    strategy: Strategy = setting("auto", STRATEGY_HELP, exclude=True)
    # Not in config.yaml/checkpoints (their config is the network's); a resume finds it in tracking.json.
    tracking: TrackingSettings = tracking_section(exclude=True)


class ExportConfig(RecipeConfig):
    """``docclass export``: a checkpoint's inference branch to ONNX, as the checkpoint's own config says.

    A preset, a ``--config`` file or ``key=value`` settings (``onnx.options.opset_version=17``)
    go into ``settings`` and are laid over the checkpoint's config; one that changes the network
    or its input size is refused.
    """

    checkpoint: str = setting(..., "A docclass checkpoint (weights/best.ckpt of a run).", metavar="CKPT")
    output: Optional[str] = setting(None, "ONNX file to write (default: beside the checkpoint, .onnx).", aliases=["out"],
                                    short="-o", metavar="FILE")
    trust_checkpoint: bool = setting(
        False, "Load the checkpoint even if it holds pickled objects (they can run code; only for files you trust).")
    image_size: Optional[int] = setting(None, "Input size of the config given (must match the checkpoint).",
                                        aliases=["imgsz"], ge=16, le=1024)
    images: list[str] = setting(default_factory=list, description="Real images for the parity check (repeatable; "
                                "default: generated documents).", aliases=["image"], metavar="IMAGE")
    tolerance: float = setting(1e-4, "Largest allowed |onnxruntime - PyTorch| difference.", gt=0)
    settings: dict[str, Any] = setting(default_factory=dict, description="Config settings laid over the checkpoint's "
                                       "config (a preset, --config, key=value).", flag=False)

    @model_validator(mode="before")
    @classmethod
    def _config_keys_into_settings(cls, data: Any) -> Any:
        """A preset or --config file holds a DocclassConfig: its keys are settings, not export options."""
        if not isinstance(data, dict):
            return data
        own = set(cls.model_fields)
        extra = {k: v for k, v in data.items() if k not in own}
        if not extra:
            return data
        from kitaeru.core.config import deep_merge

        kept = {k: v for k, v in data.items() if k in own}
        kept["settings"] = deep_merge(extra, dict(kept.get("settings") or {}))
        return kept


class EvaluateConfig(RecipeConfig):
    """``docclass evaluate``: the recipe's metric on fresh synthetic photos of any template set."""

    model: str = setting(..., "The model: a docclass checkpoint (.ckpt) or an exported .onnx (with its .onnx.json).", metavar="MODEL")
    templates: str = setting(..., "Folder of template images (recursive); each image is a class (times its orientations).",
                             aliases=["data-dir"], metavar="DIR")
    samples_per_class: int = setting(8, "Fresh photos drawn per template and orientation.", ge=2)
    rotations: Optional[list[int]] = setting(None, "Rotations to test (repeatable; default: the ones the model was trained on).")
    flips: Optional[list[Literal["none", "horizontal", "vertical"]]] = setting(
        None, "Flip states to test (repeatable; default: the ones the model was trained on).")
    template_side: int = setting(256, "Longest side the templates are kept at; photos start from this size.", ge=32)
    threshold_fpr: Optional[float] = setting(None, "FPR whose threshold is reported (default: the model's, else 1e-3).", gt=0, lt=1)
    bank: Optional[str] = setting(None, "A bank from 'docclass register': also report the FPR and TPR its calibrated "
                                  "thresholds achieve on fresh impostor photos.", metavar="FILE")
    seed: int = setting(0, "Seed of the photo draws (drawn far from any training or validation draw).")
    batch_size: int = setting(64, "Photos per inference batch.", aliases=["batch"], ge=1)
    workers: Optional[int] = setting(None, "Worker processes that draw photos (default: up to 4).", ge=0)
    device: str = setting("cpu", "Device for a checkpoint model (ONNX runs on onnxruntime's CPU).")
    augment: AugmentSection = setting(default_factory=AugmentSection, description="Synthetic photo augmentations "
                                      "(default: the ones the model was trained with; augment.perspective=0.2 ... on top).")

    @field_validator("rotations")
    @classmethod
    def _quarter_turns(cls, value: Optional[list[int]]) -> Optional[list[int]]:
        return None if value is None else DataSection._quarter_turns(value)


class RegisterConfig(RecipeConfig):
    """``docclass register``: the feature of every template into a bank file."""

    model: str = setting(..., "model.onnx (onnxruntime, no PyTorch needed) or a docclass checkpoint.", metavar="MODEL")
    templates: str = setting(..., "Folder of template images; label = file stem, or sub-folder name.", aliases=["data-dir"], metavar="DIR")
    output: str = setting("bank.npz", "Bank file to write.", aliases=["out"], short="-o", metavar="FILE")
    target_fpr: Optional[float] = setting(
        None, "Open-set calibration: per-label 'unknown' thresholds that accept at most this share of impostor photos "
        "(other templates' photos and generic documents); default: the model's FPR, else 1e-3.", gt=0, lt=1)
    calibrate: bool = setting(True, "Calibrate the thresholds on impostor photos (--no-calibrate: keep the model's threshold).")
    device: str = setting("cpu", "Device for a checkpoint model (ONNX runs on onnxruntime's CPU).")


class ClassifyConfig(RecipeConfig):
    """``docclass classify``: each photo's best-matching registered template, or ``unknown``."""

    images: list[str] = setting(default_factory=list, description="Images or folders of images to classify (repeatable).",
                                aliases=["image"], short="-i", metavar="IMAGE")
    model: str = setting(..., "model.onnx (onnxruntime, no PyTorch needed) or a docclass checkpoint.", metavar="MODEL")
    bank: str = setting(..., "Bank written by 'docclass register' with the same model.", metavar="FILE")
    threshold: Optional[float] = setting(
        None, "Cosine score below which a photo is 'unknown', a finite number in [-1, 1] (default: stored with the model, "
        "from the validation ROC).", ge=-1.0, le=1.0, allow_inf_nan=False)
    device: str = setting("cpu", "Device for a checkpoint model (ONNX runs on onnxruntime's CPU).")
