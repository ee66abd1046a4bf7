"""The UMAP map: see a whole embedding set (or every scene of a multimodal run) at a glance.

The job, in order:

1. **Points** (``points``, ``scenes``): the vectors of an ``embed`` output (Parquet file, folder of
   shards, or ``.npy`` + ``.meta.parquet``), or the scenes of a multimodal output's
   ``vector_db.json`` (image or description side); big inputs are sampled while reading.
2. **Projection** (``kitaeru.viz.umap_projection``): UMAP to 2-D, seeded for a reproducible layout.
3. **Pictures** (``build``, with ``kitaeru.viz.map_figures`` and ``kitaeru.viz.thumbnails``): a
   PNG scatter, an interactive HTML (hover: label, metadata, a thumbnail) and a JSON file of the
   coordinates.

Entry function: :func:`map` (the command is ``kitaeru map``). Light imports only here.
"""

from __future__ import annotations

from typing import Any

from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe

from .config import MapConfig

__all__ = ["RECIPE", "MapConfig", "map"]


def map(config: MapConfig) -> dict[str, Any]:  # noqa: A001 - the mode's name, as every recipe names its entries
    """Project the configured vectors to 2-D and write the PNG (and HTML / JSON); returns a summary."""
    from kitaeru.core.errors import DataError
    from kitaeru.core.storage import exists

    from kitaeru.core.storage import check_output_path

    for flag, path in (("--output", config.output), ("--html", config.html), ("--output-json", config.output_json)):
        check_output_path(path, setting=flag)  # before 25 s of UMAP, not after
    source = config.embeddings or config.output_dir
    if not exists(source):
        flag = "--embeddings" if config.embeddings else "--output-dir"
        raise DataError(f"{source}: not found ({flag})")
    from .build import build_map

    return build_map(config)


def _summary(summary: dict[str, Any]) -> None:
    from kitaeru.core.console import print_table

    rows = [("points", f"{summary['points']} of {summary['total_points']}" if summary["sampled"] else summary["points"]),
            ("dimension", summary["dim"])]
    rows += [(kind, path) for kind, path in summary["outputs"].items()]
    rows += [(f"seconds ({step})", value) for step, value in summary["seconds"].items()]
    print_table("kitaeru map", ["", "value"], rows)


RECIPE = Recipe(
    name="map",
    help=JOBS["map"],
    modes=[
        Mode(
            "map", MapConfig, map,
            "Project vectors to 2-D with UMAP and draw them: PNG, interactive HTML, JSON coordinates.",
            examples=[
                "kitaeru map --embeddings vectors/embeddings.parquet --output map.png --html map.html --output-json coords.json",
                "kitaeru map --output-dir runs/quickstart --output scenes.png --html scenes.html --color-by weather",
                "kitaeru map --embeddings s3://bucket/vectors/ --sample 50000 n_neighbors=30 --json",
            ],
            summary=_summary, presets=True,
        ),
    ],
)
