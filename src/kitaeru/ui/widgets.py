"""Pieces every page uses: one-line errors, images read through the roots, and curve charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import streamlit as st

from kitaeru.ui import curves as C
from kitaeru.ui import maps as M
from kitaeru.ui import runs as R


def one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, (ValueError, OSError)) else text or type(exc).__name__


def show_image(roots: R.Roots, path: str | Path | None, caption: str = "", width: int | None = None) -> None:
    data = M.image_bytes(roots, str(path) if path else None)
    if data is None:
        st.caption(f"{caption} (image not available)")
        return
    if width:
        st.image(data, caption=caption, width=width)
    else:
        st.image(data, caption=caption, width="stretch")


def curve_figure(metric: str, tables: dict[str, tuple[list[str], list[dict[str, Any]]]], colours: dict[str, str], *,
                 x_mode: str = "epoch", smoothing: float = 0.0, log_y: bool = False, height: int = 300):
    """One metric of several runs: a colour per run, the smoothed line over the faint raw one
    (TensorBoard's look), values on hover, a sensible range for flat curves."""
    import plotly.graph_objects as go

    fig = go.Figure()
    every_y: list[float] = []
    for name, (_, rows) in tables.items():
        xs, ys = C.series(rows, metric, x_mode, log_y=log_y)
        if not xs:
            continue
        every_y += ys
        colour = colours.get(name, C.PALETTE[0])
        hover = C.hover_template(metric, x_mode)
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, legendgroup=name, showlegend=False,
                                     line=dict(color=colour, width=1), opacity=0.3, hovertemplate=hover))
            ys = C.smooth(ys, smoothing)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers" if len(xs) < 30 else "lines", name=name,
                                 legendgroup=name, line=dict(color=colour, width=2), marker=dict(size=5),
                                 hovertemplate=hover))
    y_axis: dict[str, Any] = {"type": "log" if log_y else "linear", "exponentformat": "power" if log_y else "none"}
    fixed = C.y_range(every_y, log_y=log_y)
    if fixed:
        y_axis["range"] = fixed
    fig.update_layout(title=metric, height=height, margin=dict(l=10, r=10, t=40, b=10), template="plotly_white",
                      xaxis_title=x_mode, yaxis=y_axis, hovermode="x unified", showlegend=len(tables) > 1,
                      legend=dict(orientation="h", y=-0.25))
    return fig


def curve_grid(tables: dict[str, tuple[list[str], list[dict[str, Any]]]], metrics: Sequence[str], colours: dict[str, str],
               *, key: str, x_mode: str = "epoch", smoothing: float = 0.0, log_y: bool = False, columns: int = 2) -> None:
    grid = st.columns(columns)
    for i, metric in enumerate(metrics):
        fig = curve_figure(metric, tables, colours, x_mode=x_mode, smoothing=smoothing, log_y=log_y)
        with grid[i % columns]:
            st.plotly_chart(fig, width="stretch", key=f"{key}-{metric}")


def metrics_of(tables: dict[str, tuple[list[str], list[dict[str, Any]]]]) -> list[str]:
    from kitaeru.core.plots import curve_columns

    return list(dict.fromkeys(c for cols, rows in tables.values() for c in curve_columns(cols, rows)
                              if c not in ("seconds", "step")))
