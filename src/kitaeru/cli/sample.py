"""``kitaeru sample ...``: write built-in sample datasets to a folder, for demos and tests."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="Write built-in sample datasets and a tiny Stable Diffusion pipeline to a folder.", no_args_is_help=True)


@app.callback(epilog=(
    "Examples:\n\n"
    "  kitaeru sample scenes --out data/scenes --num-scenes 200\n\n"
    "  kitaeru sample documents --out data/templates --num 8 --photos data/photos\n\n"
    "  kitaeru sample detection --out data/shapes\n\n"
    "  kitaeru sample floorplans --out data/floorplans\n\n"
    "  kitaeru sample sd-pipeline --out models/tiny-sd"
))
def sample() -> None:
    """Write built-in sample datasets (driving scenes, document templates, shapes to detect, floor plans) and a tiny Stable Diffusion pipeline."""


@app.command("scenes")
def scenes(
    out: Path = typer.Option(..., "--out", help="Folder to write scenes_metadata.json, images/ and timeseries/ into."),
    num_scenes: int = typer.Option(240, "--num-scenes", help="How many scenes to generate."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the generator (the same seed gives the same scenes)."),
    timeseries: bool = typer.Option(True, "--timeseries/--no-timeseries", help="Also write timeseries/<scene_id>.npy (T, 6)."),
) -> None:
    """Generated driving scenes (English + Japanese captions, matching pictures and time series).

    Example: kitaeru sample scenes --out data/scenes --num-scenes 200
    """
    from kitaeru.core.console import info
    from kitaeru.recipes.multimodal import write_sample_scenes

    folder = write_sample_scenes(out, num_scenes, seed=seed, timeseries=timeseries)
    info(f"wrote {num_scenes} scenes to {folder} (scenes_metadata.json, images/" + (", timeseries/)" if timeseries else ")"))
    typer.echo(str(folder))


@app.command("documents")
def documents(
    out: Path = typer.Option(..., "--out", help="Folder to write the template images (<kind>_<nnn>.png) into."),
    num: int = typer.Option(10, "--num", help="How many templates to generate (kinds are cycled)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the generator (the same seed gives the same documents)."),
    kinds: str = typer.Option(
        "id_card,passport,receipt,form,letter", "--kinds", help="Comma-separated document kinds: id_card, passport, receipt, form, letter."
    ),
    photos: Optional[Path] = typer.Option(
        None, "--photos", help="Also write one synthetic photo of each template (<name>.jpg) into this folder, to try 'docclass classify'."
    ),
) -> None:
    """Synthetic document templates (ID card, passport with MRZ, receipt, form, letter) for docclass.

    Example: kitaeru sample documents --out data/templates --num 8 --photos data/photos
    """
    from kitaeru.core.console import info
    from kitaeru.recipes.docclass.sample_documents import generate_documents, write_document_photos

    written = generate_documents(out, num, seed=seed, kinds=[k.strip() for k in kinds.split(",") if k.strip()])
    info(f"wrote {len(written)} document template(s) to {out}")
    if photos is not None:
        write_document_photos(written, photos, seed=seed)
        info(f"wrote {len(written)} photo(s) of them to {photos}")
    typer.echo(str(out))


@app.command("detection")
def detection(
    out: Path = typer.Option(..., "--out", help="Folder to write data.yaml, images/{train,val} and labels/{train,val} into."),
    train: int = typer.Option(160, "--train", min=1, help="Training images."),
    val: int = typer.Option(40, "--val", min=1, help="Validation images."),
    image_size: int = typer.Option(160, "--image-size", min=64, max=1280, help="Side of the square pictures in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the generator (the same seed gives the same dataset)."),
) -> None:
    """A YOLO detection dataset of drawn shapes (circle, square, triangle) on textured backgrounds.

    Each label is exactly the box of an object drawn in its picture, so a model trained on it
    demonstrably learns: ``kitaeru detect train`` reaches a real mAP in about a minute on a CPU.

    Example: kitaeru sample detection --out data/shapes
    """
    from kitaeru.core.console import info
    from kitaeru.recipes.detect import write_sample_detection

    data_yaml = write_sample_detection(out, train=train, val=val, image_size=image_size, seed=seed)
    info(f"wrote {train} training and {val} validation images of circles, squares and triangles to {out}; "
         f"train with: kitaeru detect train -d {data_yaml}")
    typer.echo(str(data_yaml))


@app.command("floorplans")
def floorplans(
    out: Path = typer.Option(..., "--out", help="Folder to write plan_NNN_{1f,2f}.png and their same-name .json into."),
    count: int = typer.Option(24, "--count", min=1, max=10_000, help="How many plans to draw."),
    size: int = typer.Option(512, "--size", min=64, max=2048, help="Side of the square drawings in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the generator (the same seed gives the same plans)."),
) -> None:
    """Floor plans drawn as black lines on white (walls, rooms, doors, windows on a grid), each with
    the guide's JSON (grid_px, grid_mm, floor), to try 'kitaeru lora prepare' and 'train' offline.

    Example: kitaeru sample floorplans --out data/floorplans
    """
    from kitaeru.core.console import info
    from kitaeru.recipes.lora.sample_plans import write_sample_plans

    folder = write_sample_plans(out, count, size=size, seed=seed)
    info(f"wrote {count} floor plans (PNG + JSON) to {folder}; caption them with: "
         f"kitaeru lora prepare --images {folder} --output-dir {folder}_prepared")
    typer.echo(str(folder))


@app.command("sd-pipeline")
def sd_pipeline(
    out: Path = typer.Option(..., "--out", help="Folder to write the diffusers pipeline into (model_index.json, unet/, vae/, ...)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initialisation (the same seed gives the same weights)."),
) -> None:
    """A tiny random-init Stable Diffusion pipeline (real CLIP tokenizer, built offline) for demos and tests.

    It runs the whole LoRA workflow in seconds on a CPU but generates no real floor plans: real
    results need a real Stable Diffusion base on a GPU.

    Example: kitaeru sample sd-pipeline --out models/tiny-sd
    """
    from kitaeru.core.console import info
    from kitaeru.recipes.lora.tiny_pipeline import write_tiny_pipeline

    folder = write_tiny_pipeline(out, seed=seed)
    info(f"wrote a tiny random-init Stable Diffusion pipeline to {folder} (use it as --pretrained-model)")
    typer.echo(str(folder))
