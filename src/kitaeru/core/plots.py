"""``results.png``: the curves of a run's ``results.csv``, drawn when the run ends (as Ultralytics does).

One small panel per numeric column (losses, metrics, learning rate) against the epoch, so anyone
can see how a run went without opening a UI. Columns are grouped the way the dashboard groups them
(:func:`curve_columns`), so the PNG and the Training page show the same curves.

Drawn with Pillow, not matplotlib, because it is drawn at the end of every run: matplotlib took
0.2–0.3 s of CPU for the eleven panels of a detect run (every axis builds and measures dozens of
artists), plus the import of its figure modules in a fresh process; Pillow takes about 0.04 s, much
of it PNG compression, during which it releases the GIL. The picture is drawn at twice its size and
reduced, which smooths its lines.
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
PANEL = (320, 260)  # pixels per curve
SCALE = 2  # drawn at SCALE times the size, then reduced
LINE, GRID, TEXT = (31, 119, 180), (225, 225, 225), (0, 0, 0)


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
    from PIL import Image, ImageDraw

    x_name = x_column(columns)
    xs = [r.get(x_name) if x_name else i + 1 for i, r in enumerate(rows)]
    ncols = min(5, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    s = SCALE
    width, height = PANEL[0] * ncols, PANEL[1] * nrows + 40
    image = Image.new("RGB", (width * s, height * s), "white")
    draw = ImageDraw.Draw(image)
    title, small = _font(13 * s), _font(10 * s)
    draw.text((width * s // 2, 8 * s), f"{run_dir.name}: results.csv", fill=TEXT, font=title, anchor="mt")
    for i, name in enumerate(curves):
        left, top = (i % ncols) * PANEL[0] * s, ((i // ncols) * PANEL[1] + 30) * s
        draw.text((left + (PANEL[0] + 40) * s // 2, top + 6 * s), name, fill=TEXT, font=title, anchor="mt")
        box = (left + 60 * s, top + 26 * s, left + (PANEL[0] - 15) * s, top + (PANEL[1] - 30) * s)
        points = [(x, r[name]) for x, r in zip(xs, rows) if x is not None and r.get(name) is not None]
        _panel(draw, box, points, small, s)
    if x_name:
        draw.text((width * s // 2, (height - 14) * s), x_name, fill=TEXT, font=small, anchor="mt")
    target = run_dir / RESULTS_PNG
    from .storage import atomic_path

    # atomic_path: a failed save (a full disk) leaves neither a temporary file nor a broken PNG
    with atomic_path(target) as tmp:
        # Fast compression: PNG encoding is most of the drawing's time; the file is ~50 KB instead of ~40.
        image.reduce(s).save(tmp, format="PNG", compress_level=1)
    return target


def _panel(draw, box: tuple[int, int, int, int], points: list[tuple[float, float]], font, s: int) -> None:
    """One curve in ``box`` (pixels): frame, grid, tick labels, the line and a dot per point."""
    left, top, right, bottom = box
    draw.rectangle(box, outline=TEXT, width=s)
    if not points:
        return
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_ticks = nice_ticks(min(xs), max(xs), integer=True)
    y_ticks = nice_ticks(min(ys), max(ys))
    (x0, x1), (y0, y1) = _span(min(xs), max(xs)), _span(min(ys), max(ys))
    pad = 6 * s

    def at(x: float, y: float) -> tuple[float, float]:
        return (left + pad + (x - x0) / (x1 - x0) * (right - left - 2 * pad),
                bottom - pad - (y - y0) / (y1 - y0) * (bottom - top - 2 * pad))

    for y in y_ticks:
        _, py = at(x0, y)
        draw.line((left + s, py, right - s, py), fill=GRID, width=s)
        draw.text((left - 4 * s, py), _label(y), fill=TEXT, font=font, anchor="rm")
    for x in x_ticks:
        px, _ = at(x, y0)
        draw.line((px, top + s, px, bottom - s), fill=GRID, width=s)
        draw.text((px, bottom + 4 * s), _label(x), fill=TEXT, font=font, anchor="mt")
    line = [at(x, y) for x, y in points]
    if len(line) > 1:
        draw.line(line, fill=LINE, width=2 * s, joint="curve")
    if len(line) <= 100:  # a dot per epoch while they can be told apart
        for px, py in line:
            draw.ellipse((px - 2 * s, py - 2 * s, px + 2 * s, py + 2 * s), fill=LINE)


def nice_ticks(lo: float, hi: float, *, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round values (steps of 1, 2, 2.5 or 5 times a power of ten; whole steps when
    ``integer``) within ``lo``..``hi``."""
    lo, hi = _span(lo, hi)
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _label(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e7 else f"{value:.4g}"


def _span(lo: float, hi: float) -> tuple[float, float]:
    """``lo``..``hi`` widened around a single value, as a flat curve still needs a scale."""
    if hi > lo:
        return lo, hi
    margin = abs(lo) * 0.05 or 0.05
    return lo - margin, hi + margin


def _font(size: int):
    """DejaVu Sans (shipped with matplotlib, found without importing it), else Pillow's own font."""
    import importlib.util

    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)
