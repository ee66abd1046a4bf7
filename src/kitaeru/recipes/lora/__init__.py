"""Floor-plan LoRA: fine-tune a Stable Diffusion pipeline with LoRA on captioned floor-plan drawings,
then generate plans of a requested grid size.

The job, in order:

1. ``prepare`` — pair each image with its caption(s) (a same-name JSON in the guide's v1.0 or v2.0
   format, a ``.txt``/``.caption`` file, or the default from the file name) and write
   ``metadata.jsonl`` (the training rows, what ``datasets``' imagefolder reads) and
   ``captions.csv/.json`` (every image with its seeded train/val split); skipped images are listed.
2. ``train`` — LoRA on the UNet (and, on request, the text encoder; the VAE's and text encoder's
   frozen work cached once), the base scheduler's own noise schedule, a step budget,
   ``lora_model/checkpoint-N`` every N steps with exact resume, validation images,
   ``lora_model/final`` as a Hub-ready folder (diffusers weights with their rank/alpha, PEFT
   weights, model card), the run evidence and the out-of-memory ladder (halve batch -> gradient
   checkpointing -> smaller resolution).
3. ``generate`` — a plan of ``width x height`` grid cells (1-50) at the size rule, with the
   floor-plan prompt, DPM-Solver multistep, dark images inverted. ``kitaeru serve --lora`` puts
   the same generation behind ``POST /api/generate-floor-plan``.

The base model is a setting (a Hugging Face id or a local diffusers folder), never hard-coded. For
offline tries, ``write_tiny_pipeline`` (``kitaeru sample sd-pipeline``) writes a tiny random-init
pipeline: it runs every code path in seconds and generates no real floor plans.

Modules: ``config`` (schemas and where runs sit on disk), ``data`` (captions and the prepared dataset),
``training`` (the entry: checks, run folder, OOM ladder), ``model`` (frozen parts and adapters),
``images``, ``cache`` (latents and text embeddings), ``loop`` (the Fabric loop on one or several
devices; metrics leave it through ``log_metrics``), ``checkpoints`` (write and resume), ``evaluation``
(validation images), ``export`` (final folder and model card), ``inference`` (``generate``),
``tiny_pipeline``; loading any adapter folder of a run
(``resolve_adapter``), the pipeline and the size rule live in ``kitaeru.models.diffusion`` (shared
with ``serve`` and the dashboard).
"""

from __future__ import annotations

from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe

from .config import GenerateConfig, PrepareConfig, TrainConfig

__all__ = ["RECIPE", "PrepareConfig", "TrainConfig", "GenerateConfig", "prepare", "train", "generate"]


def _check_prepare(config: PrepareConfig) -> None:
    from pathlib import Path

    from kitaeru.core.errors import ConfigError, DataError

    if not config.images:
        raise ConfigError("--images: give the folder of floor-plan images")
    if not config.output_dir:
        raise ConfigError("--output-dir: give the folder to write the prepared dataset to")
    if not Path(config.images).is_dir():
        raise DataError(f"--images {config.images}: not found or not a folder")
    from kitaeru.core.storage import check_output_path

    check_output_path(config.output_dir, setting="--output-dir", kind="dir")


def prepare(config: PrepareConfig) -> dict:
    """Pair images with captions and write the dataset files; returns counts and skipped images."""
    from pathlib import Path

    from .data import prepare_dataset

    _check_prepare(config)
    return prepare_dataset(Path(config.images), Path(config.output_dir), val_fraction=config.val_fraction,
                           seed=config.seed, min_size=config.min_size)


def train(config: TrainConfig) -> dict:
    """Train (or ``--resume``) a LoRA adapter; returns the fields of ``training_result.json``."""
    from .training import train_lora

    return train_lora(config)


def generate(config: GenerateConfig) -> dict:
    """Generate floor plans of ``width x height`` grid cells; returns the written image paths."""
    from .inference import generate_plans

    return generate_plans(config)


def _check_train(config: TrainConfig) -> None:
    from .training import check_train

    check_train(config)


def _check_generate(config: GenerateConfig) -> None:
    from .inference import check_generate

    check_generate(config)


def _print_prepare(result: dict) -> None:
    from kitaeru.core.console import print_table

    rows = [("images", result["images"]), ("train", result["train"]), ("val", result["val"]),
            ("captions", ", ".join(f"{k} {v}" for k, v in sorted(result["caption_sources"].items()))),
            ("images with several captions", result["several_captions"]),
            ("skipped", len(result["skipped"])), ("output", result["output_dir"])]
    print_table("prepared floor-plan dataset", ["", "value"], rows)
    print_table("caption sources", ["source", "images", "files"], [
        (source, len(names), _names(names)) for source, names in sorted(result["caption_files"].items())])
    if result["skipped"]:
        print_table("skipped images", ["path", "reason"], [(s["path"], s["reason"]) for s in result["skipped"]])


def _names(names: list[str], shown: int = 6) -> str:
    """A few file names, then how many more (the full lists are in --json and captions.csv)."""
    more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _print_train(result: dict) -> None:
    from kitaeru.core.console import print_table

    print_table("LoRA training", ["", "value"], [
        ("run", result["run_dir"]), ("steps", result["steps"]), ("epochs", result["epochs_completed"]),
        ("final loss", result["final_loss"]), ("adapter", result["final_dir"]), ("model card", result["model_card"]),
        ("OOM recoveries", len(result["oom_recoveries"])),
    ])


def _print_generate(result: dict) -> None:
    from kitaeru.core.console import stdout

    for path in result["images"]:
        stdout.print(f"{path} ({result['width_px']}x{result['height_px']})")


RECIPE = Recipe("lora", JOBS["lora"], [
    Mode("prepare", PrepareConfig, prepare,
         "Pair floor-plan images with captions (JSON v1.0/v2.0, .txt, or the default) and write the dataset files.",
         ["kitaeru lora prepare --images data/floorplans --output-dir data/floorplans_prepared",
          "kitaeru lora prepare -i plans/ -o prepared/ --val-fraction 0.2 --seed 7 --json"],
         summary=_print_prepare, check=_check_prepare),
    Mode("train", TrainConfig, train,
         "Train a LoRA adapter on a Stable Diffusion UNet (checkpoints, exact --resume, validation images, OOM ladder).",
         ["kitaeru lora train --cfg-name floorplan_sd21 --data-dir data/floorplans_prepared --pretrained-model ID_OR_DIR",
          "kitaeru lora train --cfg-name tiny_cpu -d data/floorplans_prepared --pretrained-model tiny-sd",
          "kitaeru lora train --resume runs/lora/train --epochs 10",
          "kitaeru lora train --cfg-name floorplan_sd21 -d data/floorplans_prepared --pretrained-model ID_OR_DIR --devices 4"],
         summary=_print_train, check=_check_train, presets=True),
    Mode("generate", GenerateConfig, generate,
         "Generate a floor plan of WIDTH x HEIGHT grid cells (1-50) with the trained adapter.",
         ["kitaeru lora generate --width 10 --height 8 --lora runs/lora/train/lora_model/final --output plan.png",
          "kitaeru lora generate -W 6 -H 4 --pretrained-model ID_OR_DIR --num-images 4 --seed 1"],
         summary=_print_generate, check=_check_generate),
])
