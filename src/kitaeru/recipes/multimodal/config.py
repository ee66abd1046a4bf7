"""Configs of ``kitaeru multimodal train|evaluate|search``: each field declared once, with its help,
its allowed values and the guides' other spellings (the command line is generated from them).

Light imports only: the CLI builds its options (and their help) from these schemas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import field_validator, model_validator

from kitaeru.core.config import Epochs, RecipeConfig, setting
from kitaeru.core.distributed import DEVICES_HELP, NUM_NODES_HELP, STRATEGY_HELP, DeviceCount, Strategy
from kitaeru.core.errors import ConfigError
from kitaeru.core.tracking import TrackingSettings, tracking_section

DEFAULT_RUNS = "runs"
DEFAULT_NAME = "multimodal"
DEFAULT_OUTPUT = f"{DEFAULT_RUNS}/{DEFAULT_NAME}"
COLAB_OUTPUT = "/content/output"
DEVICE_HELP = "auto | cuda | cuda:N | mps | cpu (auto = cuda, then mps, then cpu)."


class MultimodalConfig(RecipeConfig):
    """Contrastive text ↔ image (↔ time-series) projectors over frozen encoders, on driving scenes."""

    # ---- data ----
    data_dir: Optional[str] = setting(
        None, "Scene folder: scenes_metadata.json + images/ (+ timeseries/<scene_id>.npy|.mcap). Local path or fsspec URL.",
        aliases=["dataset", "data"], short="-d", metavar="DIR")
    nuscenes_path: Optional[str] = setting(None, "nuScenes root (holding v1.0-*/ tables and samples/); one entry per scene.",
                                           metavar="DIR")
    nuscenes_version: Optional[str] = setting(None, "nuScenes table folder to read (default: v1.0-mini, else the only v1.0-* folder).")
    use_devkit: bool = setting(False, "Read --nuscenes-path through nuscenes-devkit (the devkit extra) instead of the built-in table reader.")
    use_sample_data: bool = setting(False, "Generate the built-in driving scenes (English + Japanese captions) into OUTPUT/sample_data and train on them.")
    sample_scenes: int = setting(240, "How many scenes --use-sample-data generates.", ge=2, le=100_000)
    include_timeseries: bool = setting(False, "Fuse each scene's time series (.npy, .mcap or nuScenes CAN bus) into the scene side with an LSTM encoder.")
    timeseries_steps: int = setting(32, "Time steps every series is resampled to.", ge=2, le=4096)
    mcap_topics: list[str] = setting(
        default_factory=list, aliases=["mcap-topic"], metavar="TOPIC",
        description="MCAP topic to read (repeatable): '/topic' or '/topic:field.prefix'; none = every topic with numeric fields.")
    limit: Optional[int] = setting(None, "Use at most this many scenes.", ge=1)
    val_fraction: float = setting(0.2, "Fraction of scenes held out for validation recall.", gt=0.0, lt=1.0)
    # ---- model ----
    text_encoder: str = setting("default", "Frozen text encoder: default (offline all-MiniLM-L6-v2, English), text:use-multilingual or "
                                "text:e5-small-multilingual (offline, Japanese and ~100 other languages; [encoders] extra), "
                                "a sentence-transformers name or a local folder.")
    image_encoder: str = setting("torchvision:mobilenet_v2",
                                 "Frozen image encoder: torchvision:ARCH, timm:ARCH, open_clip:ARCH or open_clip:ARCH/TAG "
                                 "(timm:tf_efficientnet_lite0/1/2 load packaged ImageNet weights offline with the [encoders] extra).")
    image_pretrained: str = setting("default", "Image-encoder weights: default, none, an OpenCLIP tag or a checkpoint path.")
    image_weights: Optional[str] = setting(None, "Local state-dict file loaded into the image encoder (e.g. the ImageNet MobileNetV2 .pth).")
    image_resize: Literal["crop", "pad"] = setting("crop", "How images are fitted to the encoder's square input: centre crop or pad.")
    embed_dim: int = setting(256, "Size of the joint embedding space.", ge=2, le=4096)
    temperature: float = setting(0.07, "Initial softmax temperature of the contrastive loss (learned).", gt=0.0, le=1.0)
    # ---- training ----
    epochs: Epochs = setting(30, "Training epochs.")
    batch_size: int = setting(32, "Scenes per batch (all captions of a scene come with it).", aliases=["batch"], ge=2)
    learning_rate: float = setting(1e-4, "AdamW learning rate.", aliases=["lr"], gt=0.0)
    weight_decay: float = setting(0.0, "AdamW weight decay.", ge=0.0)
    seed: int = setting(42, "Random seed (split, initialisation, batch order).")
    skip_training: bool = setting(False, "Do not train: export vector_db.json and the map with the projectors already in --output-dir.")
    resume: Optional[str] = setting(
        None, "Continue an interrupted run from its last checkpoint: --resume alone (= latest: the --output-dir, or the "
        "newest runs/multimodal*) or --resume RUN_FOLDER. Its saved config.yaml is reused; flags given now win.",
        flag_value="latest", metavar="latest|PATH")
    exist_ok: bool = setting(False, "Start a new run in an --output-dir that already holds one, overwriting its weights and evidence.")
    trust_checkpoint: bool = setting(
        False, "--resume: load the run's checkpoint even if it holds pickled objects (they can run code; only for files you trust).")
    workers: int = setting(2, "Threads decoding images while features are extracted.", ge=0)
    encode_batch_size: int = setting(32, "Images/captions per forward pass of the frozen encoders.", ge=1)
    # ---- scaling out ----
    devices: DeviceCount = setting("1", DEVICES_HELP, metavar="N|auto")
    num_nodes: int = setting(1, NUM_NODES_HELP, ge=1)
    strategy: Strategy = setting("auto", STRATEGY_HELP)
    # ---- environment and outputs ----
    cloud: Literal["local", "colab", "sagemaker"] = setting(
        "local", "Where it runs: local, colab (output /content/output) or sagemaker (SM_CHANNEL_TRAINING in, SM_MODEL_DIR out).")
    device: str = setting("auto", DEVICE_HELP)
    output_dir: Optional[str] = setting(
        None, f"Output folder (default {DEFAULT_OUTPUT}, then {DEFAULT_OUTPUT}2, ...; colab {COLAB_OUTPUT}; sagemaker $SM_MODEL_DIR).",
        aliases=["output"], short="-o", metavar="DIR")
    s3_output: Optional[str] = setting(None, "Also upload the output folder to this URL (s3://, gs://, memory://...).")
    tracking: TrackingSettings = tracking_section()

    @field_validator("resume", mode="before")
    @classmethod
    def _resume_switch(cls, value):
        # config files written before --resume took a value say ``resume: true``
        if value is True:
            return "latest"
        if value is False or value == "":
            return None
        return value

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


# The train config under the name every recipe uses for it.
TrainConfig = MultimodalConfig


class EvaluateConfig(RecipeConfig):
    """Recall of a trained output on a scene folder."""

    output_dir: str = setting(..., "A trained output folder (query_encoder.json + projectors).", aliases=["output"],
                              short="-o", metavar="DIR")
    data_dir: str = setting(..., "A scene folder of the same format (e.g. a held-out set).", aliases=["dataset", "data"],
                            short="-d", metavar="DIR")
    limit: Optional[int] = setting(None, "Evaluate at most this many scenes.", ge=1)
    mcap_topics: list[str] = setting(default_factory=list, description="MCAP topics, as in training (repeatable).",
                                     aliases=["mcap-topic"], metavar="TOPIC")
    workers: int = setting(2, "Threads decoding images while features are extracted.", ge=0)
    device: str = setting("auto", DEVICE_HELP)


class SearchConfig(RecipeConfig):
    """A text or image query against a trained output's vector DB."""

    output_dir: str = setting(..., "A trained output folder (vector_db.json + projectors).", aliases=["output"],
                              short="-o", metavar="DIR")
    text: Optional[str] = setting(None, "A text query, e.g. 'night, heavy rain, city street'.")
    image: Optional[str] = setting(None, "An image file (or URL) as the query.")
    top_k: int = setting(5, "How many scenes to return (1-10000; at most the number of scenes).", ge=1, le=10_000)
    device: str = setting("auto", DEVICE_HELP)


# ---- cheap checks and defaults, before anything heavy is imported ------------------------------------
def _newest_run(root: str, name: str) -> Optional[str]:
    """The newest ``root/name``, ``root/name2``, ... folder (the last one :func:`next_run_dir` made)."""
    base = Path(root)
    if not base.is_dir():
        return None
    found = []
    for path in base.iterdir():
        suffix = path.name[len(name):]
        if path.is_dir() and path.name.startswith(name) and (suffix == "" or suffix.isdigit()):
            found.append((int(suffix or 1), path))
    return str(max(found)[1]) if found else None


def apply_cloud_defaults(config: MultimodalConfig) -> MultimodalConfig:
    """Fill the data source and output folder that ``--cloud`` (and ``--resume``) imply when not given.

    sagemaker: data from ``$SM_CHANNEL_TRAINING``, outputs to ``$SM_MODEL_DIR``; colab: outputs to
    ``/content/output``; local: a new ``runs/multimodal``, ``runs/multimodal2``, ... (with
    ``--resume`` alone or ``--skip-training``: the newest of them).
    """
    from kitaeru.core.run import next_run_dir

    updates: dict = {}
    resume_path = config.resume if config.resume not in (None, "latest") else None
    if resume_path:
        if config.output_dir and Path(config.output_dir) != Path(resume_path):
            raise ConfigError(f"--resume {resume_path} and --output-dir {config.output_dir}: give one run folder")
        updates["output_dir"] = resume_path
    if config.cloud == "sagemaker":
        if not (config.data_dir or config.nuscenes_path or config.use_sample_data or config.resume):
            channel = os.environ.get("SM_CHANNEL_TRAINING")
            if not channel:
                raise ConfigError("--cloud sagemaker: SM_CHANNEL_TRAINING is not set; give --data-dir (or --use-sample-data)")
            updates["data_dir"] = channel
        if not (config.output_dir or resume_path):
            model_dir = os.environ.get("SM_MODEL_DIR")
            if not model_dir:
                raise ConfigError("--cloud sagemaker: SM_MODEL_DIR is not set; give --output-dir")
            updates["output_dir"] = model_dir
    elif not (config.output_dir or resume_path):
        root, name = (str(Path(COLAB_OUTPUT).parent), Path(COLAB_OUTPUT).name) if config.cloud == "colab" \
            else (DEFAULT_RUNS, DEFAULT_NAME)
        if config.resume == "latest" or config.skip_training:  # both use the newest run's projectors
            newest = _newest_run(root, name)
            if newest is None:
                flag, hint = ("--resume", "--resume RUN_FOLDER") if config.resume else ("--skip-training", "--output-dir RUN_FOLDER")
                raise ConfigError(f"{flag}: no run under {root}/ to use (give {hint})")
            updates["output_dir"] = newest
        else:
            updates["output_dir"] = str(next_run_dir(root, name))
    return config.model_copy(update=updates)


def check_source_given(config: MultimodalConfig) -> None:
    """A data source must exist once cloud defaults are applied (called by the recipe)."""
    if not (config.data_dir or config.nuscenes_path or config.use_sample_data):
        raise ConfigError("no data: give --data-dir DIR, --nuscenes-path DIR or --use-sample-data")


def check_local_folder(path: Optional[str], flag: str, what: str = "data folder") -> None:
    """A local input folder must exist (remote URLs are checked when they are read)."""
    from kitaeru.core.errors import DataError
    from kitaeru.core.storage import is_remote

    if path and not is_remote(path) and not Path(str(path).removeprefix("file://")).is_dir():
        raise DataError(f"{path}: {what} not found ({flag})")
