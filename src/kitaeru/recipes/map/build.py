"""Build the map: read vectors → (sample) → UMAP 2-D → PNG, HTML and JSON.

Limits, so a big input still gives a map instead of exhausting the machine:

* points: inputs above ``max_points`` (200k by default) are sampled down to it unless ``--sample``
  says otherwise; sampling happens while reading, so memory holds only the sampled vectors
  (n × dim × 4 bytes) plus UMAP's neighbour graph (about n × n_neighbors × 12 bytes);
* thumbnails: only the first ``thumbnails`` points (2000 by default, about 3 KB each inline) get
  one, so the HTML stays a few MB; every point keeps its hover text;
* the HTML switches to WebGL above 5000 points, the PNG rasterises its markers.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from kitaeru.core.console import info, warn
from kitaeru.core.errors import ConfigError

from .config import MapConfig
from .points import MapPoints, check_dim, count_embedding_rows, load_embedding_points

MAX_HOVER_COLUMNS = 8
LABEL_COLUMNS = ("path", "text", "description", "scene_id", "image_path", "image_url")


def planned_sample(cfg: MapConfig, total: int) -> int | None:
    """How many points to draw from ``total`` (None = all), warning when the cap applies."""
    if cfg.sample is not None:
        return cfg.sample if cfg.sample < total else None
    if cfg.max_points and total > cfg.max_points:
        warn(f"{total} points is more than --max-points {cfg.max_points}: mapping a random sample of "
             f"{cfg.max_points} (choose with --sample N, or --max-points 0 for all)")
        return cfg.max_points
    return None


def load_points(cfg: MapConfig) -> MapPoints:
    """The (possibly sampled) points of the configured input."""
    seed = cfg.random_state if cfg.random_state >= 0 else None
    if cfg.embeddings:
        total = count_embedding_rows(cfg.embeddings)
        return load_embedding_points(cfg.embeddings, wanted=planned_sample(cfg, total), random_state=seed)
    from .scenes import load_scene_points

    return load_scene_points(cfg.output_dir, modality=cfg.modality, data_dir=cfg.data_dir,
                             wanted_for=lambda total: planned_sample(cfg, total), random_state=seed)


# The settings a multimodal run's scenes_with_umap.json was made with (recipes/multimodal/export.py).
SAVED_UMAP = {"n_neighbors": 15, "min_dist": 0.1, "metric": "cosine", "random_state": 42}


def reuses_saved_umap(cfg: MapConfig, points: MapPoints) -> bool:
    """Whether the coordinates a multimodal run saved are the map asked for (same side, same settings)."""
    same = all(getattr(cfg, k) == v for k, v in SAVED_UMAP.items())
    return bool(cfg.output_dir) and cfg.modality == "image" and points.coords is not None and same


def build_map(cfg: MapConfig) -> dict[str, Any]:
    """Write the configured map files; returns a summary (points, outputs, seconds per step)."""
    started = time.perf_counter()
    points = load_points(cfg)
    source = cfg.embeddings or cfg.output_dir
    check_dim(points.vectors, source)
    cfg = cfg.model_copy(update={"color_by": colour_column(cfg, points, source)})
    loaded = time.perf_counter()
    reused = reuses_saved_umap(cfg, points)
    coords = points.coords if reused else project(cfg, points)
    if reused:
        info(f"using the UMAP coordinates the multimodal run saved for its {len(points)} scenes (same settings: "
             "image side, n_neighbors=15, min_dist=0.1, cosine, random_state=42)")
    projected = time.perf_counter()
    outputs, sampled = write_map_files(cfg, points, coords, source, reused)
    finished = time.perf_counter()
    return {
        "points": len(points),
        "total_points": points.total,
        "sampled": sampled,
        "dim": int(points.vectors.shape[1]),
        "color_by": cfg.color_by,
        "umap_reused": reused,
        "outputs": outputs,
        "seconds": {"read": round(loaded - started, 3), "umap": round(projected - loaded, 3),
                    "draw": round(finished - projected, 3), "total": round(finished - started, 3)},
    }


def colour_column(cfg: MapConfig, points: MapPoints, source: str) -> str | None:
    """The column that colours the points: ``--color-by``, else a sensible default (None = one colour)."""
    if cfg.color_by is None:
        from kitaeru.viz.map_figures import default_colour_column

        color_by = default_colour_column(points.columns)
        if color_by:
            info(f"colouring by '{color_by}' (choose with --color-by COLUMN, or --color-by none)")
        return color_by
    color_by = None if cfg.color_by == "none" else cfg.color_by
    if color_by is not None and color_by not in points.columns:
        available = ", ".join(sorted(points.columns)) or "none"
        raise ConfigError(f"--color-by {color_by}: no such column in {source} (available: {available})")
    return color_by


def project(cfg: MapConfig, points: MapPoints):
    """UMAP 2-D coordinates of the points with the configured settings."""
    from kitaeru.viz.umap_projection import umap_2d

    info(f"UMAP of {len(points)} points ({points.vectors.shape[1]}-d): n_neighbors={cfg.n_neighbors}, "
         f"min_dist={cfg.min_dist}, metric={cfg.metric}, random_state={cfg.random_state}")
    try:
        with warnings.catch_warnings():
            # "n_jobs overridden by setting random_state": the documented price of a reproducible layout
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            return umap_2d(points.vectors, n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist, metric=cfg.metric,
                           random_state=cfg.random_state if cfg.random_state >= 0 else None)
    except ValueError as exc:
        raise ConfigError(f"--metric {cfg.metric}: UMAP refused it ({str(exc).splitlines()[0]})") from exc


def write_map_files(cfg: MapConfig, points: MapPoints, coords, source: str,
                    reused: bool) -> tuple[dict[str, str], bool]:
    """The PNG, and the HTML and JSON when asked for; returns ({kind: path}, whether points were sampled)."""
    from kitaeru.viz.map_figures import colouring, hover_texts, write_html, write_png

    values = points.columns.get(cfg.color_by) if cfg.color_by else None
    colours = colouring(cfg.color_by, values, len(points))
    title = cfg.title or f"UMAP of {Path(str(source).rstrip('/')).name}"
    sampled = len(points) < points.total
    subtitle = f"{len(points)} of {points.total} points (random sample)" if sampled else f"{len(points)} points"
    outputs = {"png": cfg.output}
    write_png(cfg.output, coords, colours, title, subtitle)
    if cfg.html:
        from kitaeru.viz.thumbnails import thumbnails

        shown = [c for c in points.columns if c not in LABEL_COLUMNS][:MAX_HOVER_COLUMNS]
        if cfg.color_by and cfg.color_by not in shown:
            shown.append(cfg.color_by)
        thumbs = thumbnails(points.images, size=cfg.thumbnail_size, limit=cfg.thumbnails)
        write_html(cfg.html, coords, colours, hover_texts(points.labels, points.columns, shown), thumbs,
                   f"{title} — {subtitle}", plotly_js=cfg.plotly_js)
        outputs["html"] = cfg.html
    if cfg.output_json:
        _write_json(cfg, points, coords, colours, values, source, sampled, reused)
        outputs["json"] = cfg.output_json
    return outputs, sampled


def _write_json(cfg: MapConfig, points: MapPoints, coords, colours, values, source: str, sampled: bool,
                reused: bool) -> None:
    from kitaeru.core.storage import atomic_write_json
    from kitaeru.viz.map_figures import coordinates_document

    header = {
        "format": "kitaeru-map/1",
        "source": str(source),
        "modality": cfg.modality if cfg.output_dir else None,
        "total_points": points.total,
        "sampled": sampled,
        "umap": {"n_components": 2, "n_neighbors": cfg.n_neighbors, "min_dist": cfg.min_dist,
                 "metric": cfg.metric, "random_state": cfg.random_state if cfg.random_state >= 0 else None},
        "color_by": cfg.color_by,
        "umap_reused": reused,
    }
    atomic_write_json(cfg.output_json, coordinates_document(coords, points.ids, points.labels, colours, values, header),
                      indent=None)
