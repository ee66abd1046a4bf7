"""Multimodal scene search: find driving scenes by a sentence or a picture.

The job, in order:

1. **Data** (``data``): a scene folder (``scenes_metadata.json`` + ``images/`` + optional
   ``timeseries/``), a nuScenes root, or the built-in generated driving scenes
   (``--use-sample-data``); split into training and validation scenes.
2. **Frozen features** (``features``): every caption through a frozen text encoder (offline
   MiniLM by default), every image through a frozen image encoder (MobileNetV2 by default), each
   time series resampled; encoded once and cached in ``OUTPUT/cache/``.
3. **Model** (``model``): a text projector, an image projector (and an LSTM time-series
   encoder) trained with a multi-positive CLIP loss; recall@1/5/10 both ways on validation.
4. **Train** (``train``): Lightning fit inside the run lifecycle (``training_result.json``
   running → completed / failed / interrupted, Ctrl-C → exit 130 and the resume command),
   ``results.csv`` a row per epoch, ``weights/last.ckpt`` and ``weights/best.ckpt``.
5. **Save** (``save``): projectors, ``query_encoder.json``, ``vector_db.json`` and
   ``scenes_with_umap.json`` (the 2-D map of the scenes).
6. **Use** (``export``): re-export with trained projectors (``--skip-training``), ``evaluate``
   recall on any scene folder, ``search`` the vector DB with a text or an image.

Entry functions: :func:`train`, :func:`evaluate`, :func:`search`. This module imports only the
config schemas; torch, Lightning and the encoders load when an entry runs, after its cheap checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe

from .config import EvaluateConfig, MultimodalConfig, SearchConfig, TrainConfig

__all__ = ["RECIPE", "EvaluateConfig", "MultimodalConfig", "SearchConfig", "TrainConfig", "evaluate", "search", "train"]

SOURCE_KEYS = ("data_dir", "nuscenes_path", "use_sample_data")


def _with_saved_config(config: TrainConfig, given: set[str]) -> TrainConfig:
    """``--resume``: the interrupted run's saved config, with what was given now on top."""
    from pydantic import ValidationError

    from kitaeru.core.config import format_validation_error, read_yaml
    from kitaeru.core.errors import ConfigError
    from kitaeru.core.run import CONFIG_YAML

    saved_file = Path(str(config.output_dir)) / CONFIG_YAML
    if not saved_file.is_file():
        return config
    saved = read_yaml(saved_file)
    if given & set(SOURCE_KEYS):  # a data source given now replaces the saved one
        saved = {k: v for k, v in saved.items() if k not in SOURCE_KEYS}
    now = config.model_dump(include=given | {"output_dir", "resume"})
    try:
        return TrainConfig.model_validate({**saved, **now, "exist_ok": False})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{saved_file} + command line")) from None


def prepare_train_config(config: TrainConfig) -> TrainConfig:
    """Cheap checks and defaults of a training run, before anything heavy is imported: the output
    folder (cloud defaults, auto-increment, resume), the data source exists, a used folder is refused."""
    from kitaeru.core.run import refuse_used_run_dir
    from kitaeru.core.storage import is_remote

    from .config import apply_cloud_defaults, check_local_folder, check_source_given

    from kitaeru.core.distributed import is_rank_zero, place, shared_run_dir, stdout_to_stderr_off_rank_zero
    from kitaeru.core.errors import ConfigError

    given = set(config.model_fields_set)
    stdout_to_stderr_off_rank_zero()
    handed = shared_run_dir()
    if not handed and place().world_size > 1 and not (config.output_dir or config.resume or config.cloud == "sagemaker"):
        raise ConfigError("several processes (torchrun/SLURM) share one run folder: give --output-dir")
    if handed:  # a process Lightning started for ddp: rank 0's run folder, already checked and in use
        config = config.model_copy(update={"output_dir": handed, **({"resume": handed} if config.resume else {})})
        config = apply_cloud_defaults(config)
        return _with_saved_config(config, given) if config.resume else config
    config = apply_cloud_defaults(config)
    if config.resume:
        config = _with_saved_config(config, given)
    check_source_given(config)
    check_local_folder(config.data_dir, "--data-dir")
    check_local_folder(config.nuscenes_path, "--nuscenes-path", "nuScenes root")
    out = str(config.output_dir)
    if not (config.resume or config.skip_training or is_remote(out)) and is_rank_zero():
        from kitaeru.core.storage import check_output_path

        check_output_path(out, setting="--output-dir", kind="dir")
        refuse_used_run_dir(out, exist_ok=config.exist_ok)
    if is_rank_zero() and not config.skip_training:  # remote destinations: credentials and bucket, tried before any work
        from kitaeru.core.remote import check_remote_output

        for url, flag in ((out, "--output-dir"), (config.s3_output, "--s3-output")):
            if url and is_remote(url):
                check_remote_output(url, setting=flag)
    from .data import check_inputs

    check_inputs(config)  # the data, then the encoder names: all before the run folder opens
    return config


def train(config: TrainConfig) -> dict[str, Any]:
    """Train the projectors and write the vector DB, the map and the run's evidence (or, with
    ``--skip-training``, export with the projectors already in ``--output-dir``)."""
    config = prepare_train_config(config)
    from .training import train_scene_search

    return train_scene_search(config)


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Recall@1/5/10 (text→image, image→text) of a trained output on a scene folder."""
    from .config import check_local_folder

    check_local_folder(config.output_dir, "--output-dir", "output folder")
    check_local_folder(config.data_dir, "--data-dir")
    from kitaeru.core.device import resolve_device

    from .inference import evaluate_output

    return evaluate_output(config.output_dir, config.data_dir, device=resolve_device(config.device).device,
                           limit=config.limit, mcap_topics=tuple(config.mcap_topics), workers=config.workers)


def search(config: SearchConfig) -> list[dict[str, Any]]:
    """The nearest scenes of a trained output's vector DB to a text or an image."""
    from kitaeru.core.errors import ConfigError

    if (config.text is None) == (config.image is None):
        raise ConfigError("give exactly one of --text or --image")
    if config.text is not None and not config.text.strip():
        raise ConfigError("--text: the query is empty")
    from .config import check_local_folder

    # cheap checks before torch and the encoders are imported: a wrong folder fails at once
    check_local_folder(config.output_dir, "--output-dir", "output folder")
    if config.image and "://" not in config.image and not Path(config.image).is_file():
        from kitaeru.core.errors import DataError

        raise DataError(f"{config.image}: image not found (--image)")
    from kitaeru.core.device import resolve_device

    from .inference import search_output

    return search_output(config.output_dir, text=config.text, image=config.image, top_k=config.top_k,
                         device=resolve_device(config.device).device)


# ---- human summaries (stdout) when --json is not given ---------------------------------------------------
def write_sample_scenes(out: str | Path, num_scenes: int, *, seed: int = 0, timeseries: bool = True) -> Path:
    """The built-in sample scenes (what ``--use-sample-data`` trains on), written to a folder
    (``kitaeru sample scenes``)."""
    from kitaeru.data.sample_scenes import write_sample_scenes as write

    return write(out, num_scenes, seed=seed, timeseries=timeseries)


def _train_summary(result: dict[str, Any]) -> None:
    from .training import summary

    summary(result)


def _evaluate_summary(result: dict[str, Any]) -> None:
    from kitaeru.core.console import print_table

    rows = [(f"R@{k}", result["text_to_image"][f"R@{k}"], result["image_to_text"][f"R@{k}"]) for k in (1, 5, 10)]
    print_table(f"recall on {result['scenes']} scenes ({result['captions']} captions) of {result['data_dir']}",
                ["k", "text→image", "image→text"], rows)


def _search_summary(hits: list[dict[str, Any]]) -> None:
    from kitaeru.core.console import print_table

    print_table(f"top {len(hits)} scenes", ["#", "scene_id", "score", "description"],
                [(h["rank"], h["scene_id"], h["score"], h["description"]) for h in hits])


RECIPE = Recipe(
    name="multimodal",
    help=JOBS["multimodal"],
    modes=[
        Mode(
            "train", TrainConfig, train,
            "Train text/image (/time-series) projectors over frozen encoders; write the vector DB, the map and the evidence.",
            examples=[
                "kitaeru multimodal train --use-sample-data --output-dir runs/quickstart",
                "kitaeru multimodal train --data-dir data/scenes --cfg-name timeseries --epochs 40",
                "kitaeru multimodal train --resume runs/quickstart",
                "kitaeru multimodal train -d data/scenes -o runs/scenes --lr 3e-4 batch_size=64",
            ],
            summary=_train_summary, presets=True,
        ),
        Mode(
            "evaluate", EvaluateConfig, evaluate,
            "Recall@1/5/10 (text→image and image→text) of a trained output on a scene folder.",
            examples=["kitaeru multimodal evaluate --output-dir runs/quickstart --data-dir runs/quickstart/sample_data --json"],
            summary=_evaluate_summary,
        ),
        Mode(
            "search", SearchConfig, search,
            "The nearest scenes to a text or an image: rank, scene_id, score, description.",
            examples=[
                "kitaeru multimodal search --output-dir runs/quickstart --text 'night, heavy rain, city street'",
                "kitaeru multimodal search --output-dir runs/quickstart --image frame.jpg --top-k 3 --json",
            ],
            summary=_search_summary,
        ),
    ],
)
