"""``kitaeru multimodal train|evaluate|search``: contrastive scene search (seed 000).

Only the config schema is imported here; torch, Lightning and the encoders load when a command runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from kitaeru.cli._common import DEVICE_HELP, CfgNameOption, ConfigFileOption, build_config
from kitaeru.core.config import field_help
from kitaeru.recipes.multimodal.config import RECIPE, MultimodalConfig

H = MultimodalConfig

app = typer.Typer(help="Contrastive text ↔ image (↔ time-series) scene embeddings: train, evaluate, search.", no_args_is_help=True)


@app.callback()
def multimodal() -> None:
    """Scene search (seed 000): ``kitaeru multimodal train --use-sample-data --output-dir runs/quickstart``."""


def _flag(value: bool) -> Optional[bool]:
    """A switch that was not given stays ``None`` so presets and --config can set it."""
    return True if value else None


@app.command("train")
def train(
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help=field_help(H, "data_dir")),
    nuscenes_path: Optional[str] = typer.Option(None, "--nuscenes-path", help=field_help(H, "nuscenes_path")),
    nuscenes_version: Optional[str] = typer.Option(None, "--nuscenes-version", help=field_help(H, "nuscenes_version")),
    use_devkit: bool = typer.Option(False, "--use-devkit", help=field_help(H, "use_devkit")),
    use_sample_data: bool = typer.Option(False, "--use-sample-data", help=field_help(H, "use_sample_data")),
    sample_scenes: Optional[int] = typer.Option(None, "--sample-scenes", help=field_help(H, "sample_scenes")),
    include_timeseries: bool = typer.Option(False, "--include-timeseries", help=field_help(H, "include_timeseries")),
    timeseries_steps: Optional[int] = typer.Option(None, "--timeseries-steps", help=field_help(H, "timeseries_steps")),
    mcap_topic: Optional[List[str]] = typer.Option(
        None, "--mcap-topic", help="MCAP topic to read (repeatable): '/topic' or '/topic:field.prefix'."
    ),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help=field_help(H, "output_dir")),
    s3_output: Optional[str] = typer.Option(None, "--s3-output", help=field_help(H, "s3_output")),
    epochs: Optional[int] = typer.Option(None, "--epochs", help=field_help(H, "epochs")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=field_help(H, "batch_size")),
    learning_rate: Optional[float] = typer.Option(None, "--learning-rate", help=field_help(H, "learning_rate")),
    limit: Optional[int] = typer.Option(None, "--limit", help=field_help(H, "limit")),
    val_fraction: Optional[float] = typer.Option(None, "--val-fraction", help=field_help(H, "val_fraction")),
    skip_training: bool = typer.Option(False, "--skip-training", help=field_help(H, "skip_training")),
    resume: bool = typer.Option(False, "--resume", help=field_help(H, "resume")),
    cloud: Optional[str] = typer.Option(None, "--cloud", help=field_help(H, "cloud")),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    text_encoder: Optional[str] = typer.Option(None, "--text-encoder", help=field_help(H, "text_encoder")),
    image_encoder: Optional[str] = typer.Option(None, "--image-encoder", help=field_help(H, "image_encoder")),
    image_pretrained: Optional[str] = typer.Option(None, "--image-pretrained", help=field_help(H, "image_pretrained")),
    image_weights: Optional[str] = typer.Option(None, "--image-weights", help=field_help(H, "image_weights")),
    embed_dim: Optional[int] = typer.Option(None, "--embed-dim", help=field_help(H, "embed_dim")),
    seed: Optional[int] = typer.Option(None, "--seed", help=field_help(H, "seed")),
    workers: Optional[int] = typer.Option(None, "--workers", help=field_help(H, "workers")),
    cfg_name: Optional[str] = CfgNameOption,
    config_file: Optional[Path] = ConfigFileOption,
) -> None:
    """Train text/image (/time-series) projectors and write the vector DB, the map and the evidence.

    Example: kitaeru multimodal train --use-sample-data --output-dir runs/quickstart
    """
    flags: dict[str, Any] = {
        "data_dir": data_dir, "nuscenes_path": nuscenes_path, "nuscenes_version": nuscenes_version,
        "use_devkit": _flag(use_devkit), "use_sample_data": _flag(use_sample_data), "sample_scenes": sample_scenes,
        "include_timeseries": _flag(include_timeseries), "timeseries_steps": timeseries_steps,
        "mcap_topics": list(mcap_topic) if mcap_topic else None, "output_dir": output_dir, "s3_output": s3_output,
        "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "limit": limit,
        "val_fraction": val_fraction, "skip_training": _flag(skip_training), "resume": _flag(resume), "cloud": cloud,
        "device": device, "text_encoder": text_encoder, "image_encoder": image_encoder,
        "image_pretrained": image_pretrained, "image_weights": image_weights, "embed_dim": embed_dim, "seed": seed,
        "workers": workers,
    }
    config = build_config(MultimodalConfig, RECIPE, cfg_name, config_file, **flags)
    from kitaeru.recipes.multimodal.train import train_scene_search

    train_scene_search(config)


@app.command("evaluate")
def evaluate(
    output_dir: str = typer.Option(..., "--output-dir", help="A trained output folder (query_encoder.json + projectors)."),
    data_dir: str = typer.Option(..., "--data-dir", help="A scene folder of the same format (e.g. a held-out set)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate at most this many scenes."),
    mcap_topic: Optional[List[str]] = typer.Option(None, "--mcap-topic", help="MCAP topics, as in training (repeatable)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help='Print {"text_to_image": {"R@1",..}, "image_to_text": {..}} to stdout.'),
) -> None:
    """Recall@1/5/10 (text→image and image→text) of a trained output on a scene folder."""
    from kitaeru.core.console import print_table
    from kitaeru.core.device import resolve_device
    from kitaeru.recipes.multimodal.export import evaluate_output

    result = evaluate_output(output_dir, data_dir, device=resolve_device(device).device, limit=limit,
                             mcap_topics=tuple(mcap_topic or ()))
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
        return
    rows = [(f"R@{k}", result["text_to_image"][f"R@{k}"], result["image_to_text"][f"R@{k}"]) for k in (1, 5, 10)]
    print_table(f"recall on {result['scenes']} scenes ({result['captions']} captions) of {data_dir}",
                ["k", "text→image", "image→text"], rows)


@app.command("search")
def search(
    output_dir: str = typer.Option(..., "--output-dir", help="A trained output folder (vector_db.json + projectors)."),
    text: Optional[str] = typer.Option(None, "--text", help="A text query, e.g. 'night, heavy rain, city street'."),
    image: Optional[str] = typer.Option(None, "--image", help="An image file (or URL) as the query."),
    top_k: int = typer.Option(5, "--top-k", help="How many scenes to return."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the hits as a JSON list to stdout."),
) -> None:
    """The nearest scenes to a text or an image: scene_id, score, description."""
    from kitaeru.core.console import print_table
    from kitaeru.core.device import resolve_device
    from kitaeru.recipes.multimodal.export import search_output

    hits = search_output(output_dir, text=text, image=image, top_k=top_k, device=resolve_device(device).device)
    if as_json:
        typer.echo(json.dumps(hits, ensure_ascii=False))
        return
    query = f"text '{text}'" if text is not None else f"image {image}"
    print_table(f"top {top_k} scenes for {query}", ["#", "scene_id", "score", "description"],
                [(h["rank"], h["scene_id"], h["score"], h["description"]) for h in hits])
