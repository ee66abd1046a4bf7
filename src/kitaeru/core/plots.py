"""``results.png``: the curves of a run's ``results.csv``, drawn when the run ends (as Ultralytics does).

One small panel per numeric column (losses, metrics, learning rate) against the epoch, so anyone
can see how a run went without opening a UI. Columns are grouped the way the dashboard groups them
(:func:`curve_columns`), so the PNG and the Training page show the same curves.

matplotlib's object API on an Agg canvas: no pyplot, no global backend switch, no display needed.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

RESULTS_PNG = "results.png"
# Columns that are the x axis or bookkeeping, not curves.
NOT_CURVES = {"epoch", "step", "seconds", "time", "global_step"}


def read_results_csv(path: str | os.PathLike) -> tuple[list[str], list[dict[str, float | None]]]:
    """Columns and rows of a ``results.csv`` (numbers parsed, blanks ``None``); raises ``ValueError``
    with a one-line reason when the file is not a usable table."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise ValueError(f"{path}: empty file")
            columns = [h.strip() for h in header]
            rows = []
            for number, raw in enumerate(reader, start=2):
                if not raw:
                    continue
                if len(raw) != len(columns):
                    raise ValueError(f"{path}: line {number} has {len(raw)} fields, the header {len(columns)}")
                rows.append({c: _number(v) for c, v in zip(columns, raw)})
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text file ({exc.reason})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a CSV table ({exc})") from None
    return columns, rows


def _number(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def x_column(columns: list[str]) -> str | None:
    for name in ("epoch", "step"):
        if name in columns:
            return name
    return None


def curve_columns(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """The columns worth a curve: numeric somewhere, not the x axis; losses first, then metrics, lr last."""
    numeric = [c for c in columns if c not in NOT_CURVES and any(r.get(c) is not None for r in rows)]

    def rank(name: str) -> tuple[int, int]:
        low = name.lower()
        if "loss" in low:
            group = 0
        elif low in ("lr", "learning_rate") or low.startswith("lr") or "temperature" in low:
            group = 2
        else:
            group = 1
        return group, numeric.index(name)

    return sorted(numeric, key=rank)


def write_results_png(run_dir: str | os.PathLike) -> Path | None:
    """Draw ``<run_dir>/results.png`` from ``<run_dir>/results.csv``; None when there is nothing to draw."""
    run_dir = Path(run_dir)
    csv_path = run_dir / "results.csv"
    if not csv_path.is_file():
        return None
    columns, rows = read_results_csv(csv_path)
    curves = curve_columns(columns, rows)
    if not rows or not curves:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x_name = x_column(columns)
    xs = [r.get(x_name) if x_name else i + 1 for i, r in enumerate(rows)]
    ncols = min(5, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.6 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    for i, name in enumerate(curves):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        points = [(x, r.get(name)) for x, r in zip(xs, rows) if x is not None and r.get(name) is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", linewidth=1.5, color="#1f77b4")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if x_name:
            ax.set_xlabel(x_name, fontsize=7)
    fig.suptitle(f"{run_dir.name}: results.csv", fontsize=10)
    # Fixed spacing instead of tight_layout(): it measures every text box and costs as much as the
    # drawing itself, at the end of every run.
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.12 / nrows + 0.04, top=1 - 0.16 / nrows - 0.02,
                        wspace=0.3, hspace=0.55)
    target = run_dir / RESULTS_PNG
    tmp = run_dir / f".{RESULTS_PNG}.tmp.png"
    fig.savefig(tmp, format="png")
    os.replace(tmp, target)
    return target
