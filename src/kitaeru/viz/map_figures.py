"""The map's three outputs: a PNG scatter (matplotlib), an interactive HTML (plotly), a JSON file.

The PNG uses matplotlib's object API on an Agg canvas (no pyplot, no global backend switch, no
display needed). The HTML embeds plotly.js (works offline; ``plotly_js="cdn"`` makes it small) and
a few lines of script that show the hovered point's thumbnail next to the cursor, since plotly's
own hover labels cannot hold images.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

MAX_CATEGORIES = 20
OTHER = "(other)"
MISSING = "(none)"
WEBGL_ABOVE = 5_000  # points; plotly's SVG scatter gets slow beyond this


@dataclass
class Colouring:
    """How points are coloured: one colour, categories (legend) or numbers (colour bar)."""

    column: str | None
    kind: str  # "none" | "categorical" | "numeric"
    categories: list[str]  # for categorical, in legend order
    labels: list[str] | None = None  # per point, for categorical
    numbers: np.ndarray | None = None  # per point, for numeric (NaN = missing)


def colouring(column: str | None, values: Sequence[Any] | None, n: int) -> Colouring:
    """Classify ``values``: numbers with many distinct values get a colour bar, the rest categories
    (the ``MAX_CATEGORIES - 1`` most frequent, then ``(other)``)."""
    if column is None or values is None:
        return Colouring(None, "none", [])
    present = [v for v in values if v is not None]
    numeric = present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)
    if numeric and len(set(present)) > 10:
        numbers = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        return Colouring(column, "numeric", [], numbers=numbers)
    labels = [MISSING if v is None else str(v) for v in values]
    counts = Counter(labels)
    if len(counts) > MAX_CATEGORIES:
        keep = {c for c, _ in counts.most_common(MAX_CATEGORIES - 1)}
        labels = [c if c in keep else OTHER for c in labels]
        counts = Counter(labels)
    categories = sorted(counts, key=lambda c: (c in (OTHER, MISSING), -counts[c], c))
    return Colouring(column, "categorical", categories, labels=labels)


# Metadata worth colouring a map by, in order of preference, when the user names none.
PREFERRED_COLOUR_COLUMNS = ("weather", "time", "location", "road", "label", "class", "category", "cluster")
NOT_COLOUR_COLUMNS = ("path", "text", "description", "scene_id", "image_path", "image_url", "id", "label_text")


def default_colour_column(columns: dict[str, Sequence[Any]]) -> str | None:
    """A metadata column with 2 to ``MAX_CATEGORIES`` distinct values (a preferred name first), else None."""
    usable = [name for name, values in columns.items() if name not in NOT_COLOUR_COLUMNS
              and 1 < len({str(v) for v in values}) <= MAX_CATEGORIES]
    for name in PREFERRED_COLOUR_COLUMNS:
        if name in usable:
            return name
    return usable[0] if usable else None


def marker_size(n: int) -> float:
    """Scatter marker area for ``n`` points: big for a few scenes, fine dust for 100k images."""
    return float(min(30.0, max(0.5, 20_000.0 / max(n, 1))))


# ---- PNG -------------------------------------------------------------------------------------
def write_png(target: str, coords: np.ndarray, colours: Colouring, title: str, subtitle: str = "") -> None:
    """A scatter plot of ``coords`` written atomically to ``target``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from kitaeru.core.storage import atomic_path

    fig = Figure(figsize=(10, 8), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    size = marker_size(len(coords))
    common = dict(s=size, linewidths=0, rasterized=len(coords) > WEBGL_ABOVE)
    if colours.kind == "categorical":
        cmap = _category_colours(len(colours.categories))
        labels = np.asarray(colours.labels)
        for colour, category in zip(cmap, colours.categories):
            mask = labels == category
            ax.scatter(coords[mask, 0], coords[mask, 1], color=colour, label=f"{category} ({int(mask.sum())})", **common)
        ax.legend(title=colours.column, loc="best", fontsize="small", markerscale=max(1.0, 6 / math.sqrt(size)))
    elif colours.kind == "numeric":
        points = ax.scatter(coords[:, 0], coords[:, 1], c=colours.numbers, cmap="viridis", plotnonfinite=True, **common)
        fig.colorbar(points, ax=ax, label=colours.column)
    else:
        ax.scatter(coords[:, 0], coords[:, 1], color="#1f77b4", **common)
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize="medium")
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")


def _category_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# ---- HTML ------------------------------------------------------------------------------------
HOVER_SCRIPT = """
var gd = document.getElementById('{plot_id}');
var tip = document.createElement('img');
tip.alt = 'thumbnail';
tip.style.cssText = 'position:fixed;display:none;pointer-events:none;z-index:1000;border:1px solid #999;background:#fff;padding:2px;';
document.body.appendChild(tip);
gd.on('plotly_hover', function (ev) {
  var p = ev.points[0];
  var uri = p && p.customdata;
  if (!uri) { tip.style.display = 'none'; return; }
  tip.src = uri;
  var e = ev.event || {};
  tip.style.left = ((e.clientX || 0) + 18) + 'px';
  tip.style.top = ((e.clientY || 0) + 18) + 'px';
  tip.style.display = 'block';
});
gd.on('plotly_unhover', function () { tip.style.display = 'none'; });
"""


def hover_texts(labels: Sequence[str], columns: dict[str, list[Any]], shown: Sequence[str]) -> list[str]:
    """One hover text per point: the label in bold, then ``column: value`` lines (HTML-escaped)."""
    out = []
    for i, label in enumerate(labels):
        lines = [f"<b>{html.escape(str(label))}</b>"]
        for name in shown:
            value = columns[name][i]
            if value is not None and value != "":
                lines.append(f"{html.escape(name)}: {html.escape(str(value))}")
        out.append("<br>".join(lines))
    return out


def write_html(
    target: str,
    coords: np.ndarray,
    colours: Colouring,
    texts: Sequence[str],
    thumbs: Sequence[str | None],
    title: str,
    *,
    plotly_js: str = "inline",
) -> None:
    """An interactive scatter (zoom, pan, hover with thumbnail) written atomically to ``target``."""
    import plotly.graph_objects as go

    from kitaeru.core.storage import atomic_write_text

    n = len(coords)
    scatter = go.Scattergl if n > WEBGL_ABOVE else go.Scatter
    size = max(3.0, min(10.0, math.sqrt(marker_size(n)) * 1.8))
    texts_arr = np.asarray(texts, dtype=object)
    thumbs_arr = np.asarray([t or "" for t in thumbs], dtype=object)
    fig = go.Figure()
    common = dict(mode="markers", hovertemplate="%{hovertext}<extra></extra>")
    if colours.kind == "categorical":
        labels = np.asarray(colours.labels)
        for category in colours.categories:
            mask = labels == category
            fig.add_trace(scatter(
                x=coords[mask, 0], y=coords[mask, 1], name=f"{category} ({int(mask.sum())})",
                hovertext=texts_arr[mask].tolist(), customdata=thumbs_arr[mask].tolist(), marker=dict(size=size), **common,
            ))
        fig.update_layout(legend_title_text=colours.column)
    else:
        marker: dict[str, Any] = dict(size=size)
        if colours.kind == "numeric":
            marker.update(color=colours.numbers.tolist(), colorscale="Viridis", showscale=True,
                          colorbar=dict(title=dict(text=colours.column)))
        fig.add_trace(scatter(x=coords[:, 0], y=coords[:, 1], name="points", hovertext=list(texts),
                              customdata=thumbs_arr.tolist(), marker=marker, **common))
    fig.update_layout(title=dict(text=html.escape(title)), xaxis_title="UMAP 1", yaxis_title="UMAP 2",
                      template="plotly_white", hovermode="closest")
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    page = fig.to_html(include_plotlyjs=True if plotly_js == "inline" else "cdn", full_html=True,
                       post_script=HOVER_SCRIPT, div_id="kitaeru-map")
    atomic_write_text(target, page)


# ---- JSON ------------------------------------------------------------------------------------
def coordinates_document(
    coords: np.ndarray,
    ids: Sequence[Any],
    labels: Sequence[str],
    colours: Colouring,
    colour_values: Sequence[Any] | None,
    header: dict[str, Any],
) -> dict[str, Any]:
    """The JSON body: settings in ``header`` plus ``points`` = [{id, x, y, label[, color]}, ...]."""
    points = []
    for i, (x, y) in enumerate(coords.tolist()):
        point = {"id": ids[i], "x": round(float(x), 6), "y": round(float(y), 6), "label": labels[i]}
        if colours.column is not None and colour_values is not None:
            point["color"] = colour_values[i]
        points.append(point)
    return {**header, "n_points": len(points), "points": points}
