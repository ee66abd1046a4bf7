"""The numbers behind the Training page's curves (no Streamlit here): x axes, smoothing, y ranges,
colours and run-to-run config differences.

Smoothing is TensorBoard's: an exponential moving average whose start is de-biased, so the first
points are not pulled towards zero; gaps (blank cells) are skipped, not treated as zeros.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

X_MODES = ("epoch", "step", "wall time (min)")
# Plotly's default qualitative palette extended: a run keeps its colour across every chart.
PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880", "#ff97ff",
           "#fecb52", "#1f77b4", "#8c564b", "#7f7f7f", "#bcbd22", "#17becf")


def x_modes(columns: Sequence[str]) -> list[str]:
    """The x axes a table supports: epoch (or row number), step when logged, wall time from ``seconds``."""
    modes = ["epoch"]
    if "step" in columns:
        modes.append("step")
    if "seconds" in columns:
        modes.append("wall time (min)")
    return modes


def x_values(rows: Sequence[dict[str, Any]], mode: str) -> list[float | None]:
    """One x per row: the epoch/step column (the row number when absent), or the minutes since the
    run's start (the running sum of each epoch's ``seconds``)."""
    if mode == "wall time (min)":
        total, out = 0.0, []
        for row in rows:
            seconds = row.get("seconds")
            total += float(seconds) if _finite(seconds) else 0.0
            out.append(round(total / 60.0, 4))
        return out
    column = "step" if mode == "step" else "epoch"
    return [row.get(column) if _finite(row.get(column)) else (n + 1 if column == "epoch" else None)
            for n, row in enumerate(rows)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series(rows: Sequence[dict[str, Any]], metric: str, mode: str, *, log_y: bool = False) -> tuple[list, list]:
    """``(xs, ys)`` of one metric: rows without a finite value (or, on a log axis, a positive one) left out."""
    xs, ys = [], []
    for x, row in zip(x_values(rows, mode), rows):
        y = row.get(metric)
        if x is None or not _finite(y) or (log_y and y <= 0):
            continue
        xs.append(x)
        ys.append(float(y))
    return xs, ys


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's de-biased exponential moving average (``weight`` 0 = raw, 0.99 = very smooth)."""
    if not 0 < weight < 1:
        return [float(v) for v in values]
    out, last, steps = [], 0.0, 0
    for value in values:
        steps += 1
        last = last * weight + (1 - weight) * float(value)
        out.append(last / (1 - weight ** steps))
    return out


def y_range(values: Sequence[float], *, log_y: bool = False) -> list[float] | None:
    """An explicit y range for a (nearly) flat curve, which Plotly would centre on a ±1 span where a
    constant 0.001 reads as 0; None lets Plotly choose. On a log axis the range is in decades."""
    finite = [v for v in values if _finite(v) and (v > 0 or not log_y)]
    if not finite:
        return None
    lo, hi = min(finite), max(finite)
    scale = max(abs(lo), abs(hi))
    if hi - lo > 1e-6 * max(scale, 1e-12):
        return None
    if log_y:
        return [math.log10(lo) - 0.5, math.log10(hi) + 0.5]
    pad = 0.5 * scale if scale > 0 else 1.0
    return [lo - pad, hi + pad]


def colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def hover_template(metric: str, x_title: str) -> str:
    return f"%{{fullData.name}}<br>{x_title} %{{x}}<br>{metric} %{{y:.5g}}<extra></extra>"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr0": 1}}`` → ``{"train.lr0": 1}`` (lists kept as values)."""
    if not isinstance(data, dict):
        return {prefix or "value": data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten(value, path) if isinstance(value, dict) else {path: value})
    return out


def read_config(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """A run's resolved ``config.yaml`` flattened, or ``({}, one-line reason)``."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, f"{path}: no resolved config in this run folder"
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return {}, f"{path}: cannot be read ({type(exc).__name__})"
    if not isinstance(data, dict):
        return {}, f"{path}: not a mapping of settings"
    return flatten(data), None


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """The settings whose values differ between two flattened configs (missing on one side shown as "–")."""
    keys = sorted(set(a) | set(b))
    return [{"setting": k, "A": _shown(a.get(k, "–")), "B": _shown(b.get(k, "–"))}
            for k in keys if a.get(k, "–") != b.get(k, "–")]


def _shown(value: Any) -> str:
    return "null" if value is None else str(value)
