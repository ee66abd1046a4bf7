"""``kitaeru embed``: images (or texts) → vectors in Parquet or ``.npy`` (seed 001's embed_vit.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from kitaeru.cli._common import DEVICE_HELP, CfgNameOption, ConfigFileOption, build_config
from kitaeru.core.config import field_help
from kitaeru.recipes.embed.config import RECIPE, EmbedConfig

S = EmbedConfig

app = typer.Typer(help="Embed images (or texts) with a ViT/CNN/CLIP encoder into Parquet or .npy.")


@app.command()
def embed(
    image_dir: Optional[str] = typer.Option(None, "--image-dir", help=field_help(S, "image_dir")),
    texts: Optional[str] = typer.Option(None, "--texts", help=field_help(S, "texts")),
    text: Optional[List[str]] = typer.Option(None, "--text", help=field_help(S, "text")),
    out: Optional[str] = typer.Option(None, "--out", "-o", help=field_help(S, "out")),
    model: Optional[str] = typer.Option(None, "--model", help=field_help(S, "model")),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help=field_help(S, "pretrained")),
    image_size: Optional[int] = typer.Option(None, "--image-size", help=field_help(S, "image_size")),
    resize: Optional[str] = typer.Option(None, "--resize", help=field_help(S, "resize")),
    pool: Optional[str] = typer.Option(None, "--pool", help=field_help(S, "pool")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=field_help(S, "batch_size")),
    workers: Optional[int] = typer.Option(None, "--workers", help=field_help(S, "workers")),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", help=field_help(S, "limit")),
    normalize: Optional[bool] = typer.Option(None, "--normalize/--no-normalize", help=field_help(S, "normalize"), show_default=False),
    resume: Optional[bool] = typer.Option(None, "--resume", help=field_help(S, "resume"), show_default=False),
    shard_size: Optional[int] = typer.Option(None, "--shard-size", help=field_help(S, "shard_size")),
    cfg_name: Optional[str] = CfgNameOption,
    config_file: Optional[Path] = ConfigFileOption,
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON on stdout."),
) -> None:
    """Embed every image under --image-dir (or the given texts) and write the vectors to --out.

    Example: kitaeru embed --model vit_l_14 --pretrained openclip --image-dir s3://bucket/nuscenes/samples/CAM_FRONT
    --image-size 224 --pool mean --batch-size 8 --out vectors/embeddings.parquet
    """
    cfg = build_config(
        EmbedConfig, RECIPE, cfg_name, config_file, image_dir=image_dir, texts=texts, text=text or None, out=out,
        model=model, pretrained=pretrained, image_size=image_size, resize=resize, pool=pool, batch_size=batch_size,
        workers=workers, device=device, limit=limit, normalize=normalize, resume=resume or None, shard_size=shard_size,
    )
    from kitaeru.recipes.embed.pipeline import print_summary, run_embed

    summary = run_embed(cfg)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    else:
        print_summary(summary)
