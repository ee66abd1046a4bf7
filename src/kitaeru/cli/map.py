"""``kitaeru map``: a 2-D UMAP picture (PNG, interactive HTML, JSON) of embeddings or scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kitaeru.core.config import field_help
from kitaeru.viz.map_config import MapConfig

from ._common import CfgNameOption, ConfigFileOption, build_config

app = typer.Typer(help="Draw a UMAP map of embeddings (embed output) or of a multimodal vector DB.")


def _help(name: str) -> str:
    return field_help(MapConfig, name)


@app.command()
def map_command(
    embeddings: Optional[str] = typer.Option(None, "--embeddings", help=_help("embeddings")),
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help=_help("output_dir")),
    modality: Optional[str] = typer.Option(None, "--modality", help=_help("modality")),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help=_help("data_dir")),
    out: Optional[str] = typer.Option(None, "--out", help=_help("out")),
    html: Optional[str] = typer.Option(None, "--html", help=_help("html")),
    json_out: Optional[str] = typer.Option(None, "--json", help=_help("json_out")),
    color_by: Optional[str] = typer.Option(None, "--color-by", help=_help("color_by")),
    sample: Optional[int] = typer.Option(None, "--sample", help=_help("sample")),
    max_points: Optional[int] = typer.Option(None, "--max-points", help=_help("max_points")),
    thumbnails: Optional[int] = typer.Option(None, "--thumbnails", help=_help("thumbnails")),
    thumbnail_size: Optional[int] = typer.Option(None, "--thumbnail-size", help=_help("thumbnail_size")),
    n_neighbors: Optional[int] = typer.Option(None, "--n-neighbors", help=_help("n_neighbors")),
    min_dist: Optional[float] = typer.Option(None, "--min-dist", help=_help("min_dist")),
    metric: Optional[str] = typer.Option(None, "--metric", help=_help("metric")),
    random_state: Optional[int] = typer.Option(None, "--random-state", help=_help("random_state")),
    plotly_js: Optional[str] = typer.Option(None, "--plotly-js", help=_help("plotly_js")),
    title: Optional[str] = typer.Option(None, "--title", help=_help("title")),
    as_json: bool = typer.Option(False, "--json-summary", help="Print the run summary as JSON on stdout."),
    cfg_name: Optional[str] = CfgNameOption,
    config_file: Optional[Path] = ConfigFileOption,
) -> None:
    """Project vectors to 2-D with UMAP and draw them.

    Example: kitaeru map --embeddings vectors/embeddings.parquet --out map.png --html map.html --json coords.json
    """
    cfg = build_config(
        MapConfig, "map", cfg_name, config_file,
        embeddings=embeddings, output_dir=output_dir, modality=modality, data_dir=data_dir, out=out, html=html,
        json_out=json_out, color_by=color_by, sample=sample, max_points=max_points, thumbnails=thumbnails,
        thumbnail_size=thumbnail_size, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
        random_state=random_state, plotly_js=plotly_js, title=title,
    )
    from kitaeru.core.console import print_table
    from kitaeru.viz.map_builder import build_map

    summary = build_map(cfg)
    if as_json:
        import json

        typer.echo(json.dumps(summary))
        return
    rows = [("points", f"{summary['points']} of {summary['total_points']}" if summary["sampled"] else summary["points"]),
            ("dimension", summary["dim"])]
    rows += [(kind, path) for kind, path in summary["outputs"].items()]
    rows += [(f"seconds ({step})", value) for step, value in summary["seconds"].items()]
    print_table("kitaeru map", ["", "value"], rows)
