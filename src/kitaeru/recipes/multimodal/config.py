"""Config of ``kitaeru multimodal train`` (seed 000): data source, frozen encoders, training, outputs.

Light imports only: the CLI builds its options (and their help) from this schema.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from kitaeru.core.config import RecipeConfig
from kitaeru.core.errors import ConfigError

RECIPE = "multimodal"
DEFAULT_OUTPUT = "runs/multimodal"
COLAB_OUTPUT = "/content/output"


class MultimodalConfig(RecipeConfig):
    """Contrastive text ↔ image (↔ time-series) projectors over frozen encoders, on driving scenes."""

    # ---- data ----
    data_dir: Optional[str] = Field(
        None, description="Scene folder: scenes_metadata.json + images/ (+ timeseries/<scene_id>.npy|.mcap). Local path or fsspec URL."
    )
    nuscenes_path: Optional[str] = Field(None, description="nuScenes root (holding v1.0-*/ tables and samples/); one entry per scene.")
    nuscenes_version: Optional[str] = Field(None, description="nuScenes table folder to read (default: v1.0-mini, else the only v1.0-* folder).")
    use_devkit: bool = Field(False, description="Read --nuscenes-path through nuscenes-devkit (the devkit extra) instead of the built-in table reader.")
    use_sample_data: bool = Field(False, description="Generate the built-in driving scenes (English + Japanese captions) into OUTPUT/sample_data and train on them.")
    sample_scenes: int = Field(240, ge=2, description="How many scenes --use-sample-data generates.")
    include_timeseries: bool = Field(False, description="Fuse each scene's time series (.npy, .mcap or nuScenes CAN bus) into the scene side with an LSTM encoder.")
    timeseries_steps: int = Field(32, ge=2, le=4096, description="Time steps every series is resampled to.")
    mcap_topics: list[str] = Field(
        default_factory=list,
        description="MCAP topics to read ('/topic' or '/topic:field.prefix'); empty = every topic with numeric fields.",
    )
    limit: Optional[int] = Field(None, ge=1, description="Use at most this many scenes.")
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="Fraction of scenes held out for validation recall.")
    # ---- model ----
    text_encoder: str = Field("default", description="Frozen text encoder: default (offline all-MiniLM-L6-v2), a sentence-transformers name or a local folder.")
    image_encoder: str = Field(
        "torchvision:mobilenet_v2",
        description="Frozen image encoder: torchvision:ARCH, timm:ARCH, open_clip:ARCH or open_clip:ARCH/TAG.",
    )
    image_pretrained: str = Field("default", description="Image-encoder weights: default, none, an OpenCLIP tag or a checkpoint path.")
    image_weights: Optional[str] = Field(None, description="Local state-dict file loaded into the image encoder (e.g. the ImageNet MobileNetV2 .pth).")
    image_resize: Literal["crop", "pad"] = Field("crop", description="How images are fitted to the encoder's square input: centre crop or pad.")
    embed_dim: int = Field(256, ge=2, le=4096, description="Size of the joint embedding space.")
    temperature: float = Field(0.07, gt=0.0, le=1.0, description="Initial softmax temperature of the contrastive loss (learned).")
    # ---- training ----
    epochs: int = Field(30, ge=1, description="Training epochs.")
    batch_size: int = Field(32, ge=2, description="Scenes per batch (all captions of a scene come with it).")
    learning_rate: float = Field(1e-4, gt=0.0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    seed: int = Field(42, description="Random seed (split, initialisation, batch order).")
    skip_training: bool = Field(False, description="Do not train: export vector_db.json and the map with the projectors already in --output-dir.")
    resume: bool = Field(False, description="Continue the interrupted run in --output-dir from its last checkpoint (weights/last.ckpt).")
    workers: int = Field(2, ge=0, description="Threads decoding images while features are extracted.")
    encode_batch_size: int = Field(32, ge=1, description="Images/captions per forward pass of the frozen encoders.")
    # ---- environment and outputs ----
    cloud: Literal["local", "colab", "sagemaker"] = Field(
        "local", description="Where it runs: local, colab (output /content/output) or sagemaker (SM_CHANNEL_TRAINING in, SM_MODEL_DIR out)."
    )
    device: str = Field("auto", description="auto | cuda | cuda:N | mps | cpu.")
    output_dir: Optional[str] = Field(None, description=f"Output folder (default {DEFAULT_OUTPUT}; colab {COLAB_OUTPUT}; sagemaker $SM_MODEL_DIR).")
    s3_output: Optional[str] = Field(None, description="Also upload the output folder to this URL (s3://, gs://, memory://...).")

    @model_validator(mode="after")
    def _one_source(self) -> "MultimodalConfig":
        given = [n for n, v in (("--data-dir", self.data_dir), ("--nuscenes-path", self.nuscenes_path),
                                ("--use-sample-data", self.use_sample_data)) if v]
        if len(given) > 1:
            raise ValueError(f"give one data source, not {' and '.join(given)}")
        if self.use_devkit and not self.nuscenes_path:
            raise ValueError("--use-devkit reads --nuscenes-path: give it too")
        if self.resume and self.skip_training:
            raise ValueError("--resume continues training; it cannot be combined with --skip-training")
        return self


def check_source_given(config: MultimodalConfig) -> None:
    """A data source must exist once cloud defaults are applied (called by the recipe)."""
    if not (config.data_dir or config.nuscenes_path or config.use_sample_data):
        raise ConfigError("no data: give --data-dir DIR, --nuscenes-path DIR or --use-sample-data")
