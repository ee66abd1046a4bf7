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
4. **Train** (``training``): the run folder and config come from the core run setup
   (:data:`config.LAYOUT`: ``--output-dir`` is the run folder, ``--resume`` continues one); Lightning
   fits inside the run lifecycle (``training_result.json`` running → completed / failed /
   interrupted, Ctrl-C → exit 130 and the resume command), ``results.csv`` a row per epoch,
   ``weights/last.ckpt`` and ``weights/best.ckpt``.
5. **Export** (``export``): projectors, ``query_encoder.json``, ``vector_db.json`` and
   ``scenes_with_umap.json`` (the 2-D map of the scenes); again with trained projectors on any
   data (``--skip-training``).
6. **Use**: ``evaluation`` (recall on any scene folder) and ``inference`` (search the vector DB with
   a text or an image). ``sample_scenes`` / ``sample_render`` generate the built-in scenes,
   ``nuscenes`` reads a nuScenes root.

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


def prepare_train_config(config: TrainConfig) -> TrainConfig:
    """Cheap checks and defaults of a training run, before anything heavy is imported: the run folder
    and its config (core run setup: new, resumed or handed over by rank 0), the data source exists, a
    used folder is refused, remote destinations answer, the data and encoder names are valid."""
    from kitaeru.core.distributed import is_rank_zero, place, shared_run_dir, stdout_to_stderr_off_rank_zero
    from kitaeru.core.errors import ConfigError
    from kitaeru.core.run import refuse_used_run_dir
    from kitaeru.core.storage import is_remote

    from .config import check_local_folder, check_source_given, handed_run, open_train_run

    stdout_to_stderr_off_rank_zero()
    handed = shared_run_dir()
    if handed:  # a process Lightning started for ddp: rank 0's run folder, already checked and in use
        return handed_run(config, handed).config
    if place().world_size > 1 and not (config.output_dir or config.resume or config.cloud == "sagemaker"):
        raise ConfigError("several processes (torchrun/SLURM) share one run folder: give --output-dir")
    opened = open_train_run(config)
    config = opened.config
    check_source_given(config)
    check_local_folder(config.data_dir, "--data-dir")
    check_local_folder(config.nuscenes_path, "--nuscenes-path", "nuScenes root")
    out = str(config.output_dir)
    if not (opened.resumed or config.skip_training or is_remote(out)) and is_rank_zero():
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

    from .evaluation import evaluate_output

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
    from .sample_scenes import write_sample_scenes as write

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
