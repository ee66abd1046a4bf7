"""Configs of ``kitaeru multimodal train|evaluate|search``: each field declared once, with its help,
its allowed values and the guides' other spellings (the command line is generated from them).

Light imports only: the CLI builds its options (and their help) from these schemas.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Literal, Optional

from pydantic import field_validator, model_validator

from kitaeru.core.config import Epochs, RecipeConfig, setting
from kitaeru.core.distributed import DEVICES_HELP, NUM_NODES_HELP, STRATEGY_HELP, DeviceCount, Strategy
from kitaeru.core.errors import ConfigError
from kitaeru.core.run_dirs import RESULT_JSON
from kitaeru.core.run_setup import OpenedRun, RunLayout, find_run, has_config, open_run, saved_config, weights_file_run
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
        "newest multimodal run under runs/) or --resume RUN_FOLDER. Its saved config.yaml is reused; options given now win.",
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


# ---- where a run lives (cheap: before anything heavy is imported) ---------------------------------------
SOURCE_KEYS = ("data_dir", "nuscenes_path", "use_sample_data")
LAST_CHECKPOINT = "weights/last.ckpt"


# A file inside a run given to --resume (``weights/last.ckpt``, ``config.yaml`` ...) -> its run folder.
_run_of = weights_file_run()


def _is_multimodal_run(folder: Path) -> bool:
    """A folder with a saved ``config.yaml`` whose evidence names no other job (runs of every job may
    share ``runs/``; a run stopped before its evidence was written counts)."""
    if not has_config(folder):
        return False
    try:
        recipe = json.loads((folder / RESULT_JSON).read_text(encoding="utf-8")).get("recipe")
    except (OSError, ValueError, AttributeError):
        return True
    return recipe in (None, "multimodal")


# --output-dir IS the run folder: new runs are runs/multimodal, runs/multimodal2 ... when none is named.
LAYOUT = RunLayout(
    "multimodal", "multimodal", is_run=_is_multimodal_run, locate=_run_of, default_name=DEFAULT_NAME,
    # the checkpoint's shapes and the cached features depend on these: a resumed run keeps them
    pinned={"embed_dim": "--embed-dim", "include_timeseries": "--include-timeseries",
            "text_encoder": "--text-encoder", "image_encoder": "--image-encoder"},
    replace_together=(frozenset(SOURCE_KEYS),), name_setting="--output-dir",
)


def _home(config: MultimodalConfig) -> tuple[Path, RunLayout]:
    """Where numbered runs go when no folder is named: ``runs/multimodal``, ``runs/multimodal2`` ...
    (colab: ``/content/output``, ``/content/output2`` ...)."""
    if config.cloud == "colab":
        return Path(COLAB_OUTPUT).parent, replace(LAYOUT, default_name=Path(COLAB_OUTPUT).name)
    return Path(DEFAULT_RUNS), LAYOUT


def _named_folder(config: MultimodalConfig) -> Optional[str]:
    """The run folder the options name: ``--output-dir``, ``--resume PATH`` or sagemaker's ``$SM_MODEL_DIR``."""
    resume_path = config.resume if config.resume not in (None, "latest") else None
    if resume_path and config.output_dir and Path(config.output_dir) != _run_of(Path(resume_path)):
        raise ConfigError(f"--resume {resume_path} and --output-dir {config.output_dir}: give one run folder")
    folder = config.output_dir or resume_path
    if folder is None and config.cloud == "sagemaker":
        folder = os.environ.get("SM_MODEL_DIR")
        if not folder:
            raise ConfigError("--cloud sagemaker: SM_MODEL_DIR is not set; give --output-dir")
    return folder


def _cloud_data(config: MultimodalConfig) -> MultimodalConfig:
    """sagemaker: the training channel ``$SM_CHANNEL_TRAINING`` when no data source is given."""
    if config.cloud != "sagemaker" or any(getattr(config, key) for key in SOURCE_KEYS):
        return config
    channel = os.environ.get("SM_CHANNEL_TRAINING")
    if not channel:
        raise ConfigError("--cloud sagemaker: SM_CHANNEL_TRAINING is not set; give --data-dir (or --use-sample-data)")
    return config.model_copy(update={"data_dir": channel})


def _resume_reference(folder: Optional[str]) -> str:
    """What ``--resume`` names for the core run setup: ``latest`` (the newest multimodal run under the
    runs folder) or the named run folder (``--resume PATH``, ``--output-dir``, ``$SM_MODEL_DIR``)."""
    from kitaeru.core.storage import is_remote

    if folder is None:
        return "latest"
    if is_remote(folder):
        raise ConfigError(f"--resume continues a local run folder, not {folder}")
    run_dir = _run_of(Path(folder).expanduser())
    if not has_config(run_dir):  # a folder that never started a run has nothing to continue
        raise ConfigError(f"--resume: no checkpoint to continue from ({run_dir / LAST_CHECKPOINT} not found)")
    return str(run_dir)


def open_train_run(config: MultimodalConfig) -> OpenedRun[MultimodalConfig]:
    """The run's folder and the config it runs with; cheap, creates nothing.

    A new run writes to ``--output-dir`` (sagemaker ``$SM_MODEL_DIR``) or the next free
    ``runs/multimodal``, ``runs/multimodal2`` ... (colab ``/content/output`` ...). ``--resume``
    continues ``--resume PATH``, the ``--output-dir``, or the newest run, with its saved config and
    the options given now on top. ``--skip-training`` exports into ``--output-dir`` or the newest run.
    A named folder is checked (used or not) by the recipe once the data checks pass, on rank 0 only.
    """
    root, layout = _home(config)
    if config.resume:
        opened = open_run(config, layout, root=root, resume=_resume_reference(_named_folder(config)),
                          now={"exist_ok": False})
        opened.config = _cloud_data(opened.config.model_copy(update={"output_dir": str(opened.run_dir)}))
        return opened
    config = _cloud_data(config)  # a missing data channel is reported before the output folder
    folder = _named_folder(config)
    if folder is None and config.skip_training:  # export with the newest run's projectors
        try:
            folder = str(find_run("latest", root, layout))
        except ConfigError:
            raise ConfigError(f"--skip-training: no run under {root}/ to use (give --output-dir RUN_FOLDER)") from None
    if folder is None:
        opened = open_run(config, layout, root=root)
        opened.config = config.model_copy(update={"output_dir": str(opened.run_dir)})
        return opened
    # a URL stays as given in output_dir (run_dir is only its local spelling; training stages it)
    return OpenedRun(config.model_copy(update={"output_dir": folder}), Path(folder), False, layout)


def handed_run(config: MultimodalConfig, handed: str) -> OpenedRun[MultimodalConfig]:
    """A process Lightning started for ddp: rank 0's run folder (already checked and in use) and, on
    ``--resume``, the config rank 0 saved there with the same options on top."""
    run_dir = Path(handed)
    if config.resume:
        config = saved_config(config, run_dir, LAYOUT, now={"resume": handed, "output_dir": handed, "exist_ok": False})
    else:
        config = config.model_copy(update={"output_dir": handed})
    return OpenedRun(_cloud_data(config), run_dir, bool(config.resume), LAYOUT)


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
