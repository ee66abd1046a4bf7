"""Built-in floor plans for a first try of ``kitaeru lora``: line drawings of flats on a grid, each with
the guide's same-name JSON (``grid_px``, ``grid_mm``, ``floor``), so ``lora prepare`` has real
caption sources to read without any download.

A plan is drawn the way the guide's plans look: black walls on white, an outer wall, rooms made by
splitting the flat along the grid, a door gap in every inner wall and windows in the outer one.
"""

from __future__ import annotations

import random
from pathlib import Path

GRID_MM = 910  # the guide's default module (one tatami width)


def _split(rng: random.Random, box: tuple[int, int, int, int], depth: int) -> list[tuple[int, int, int, int]]:
    """Rooms of ``box`` (x0, y0, x1, y1 in grid cells) by recursive splits along the grid."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if depth == 0 or max(w, h) < 4 or rng.random() < 0.15 * (3 - depth):
        return [box]
    if w >= h:
        cut = rng.randint(x0 + 2, x1 - 2)
        halves = [(x0, y0, cut, y1), (cut, y0, x1, y1)]
    else:
        cut = rng.randint(y0 + 2, y1 - 2)
        halves = [(x0, y0, x1, cut), (x0, cut, x1, y1)]
    return [room for half in halves for room in _split(rng, half, depth - 1)]


def draw_plan(rng: random.Random, size: int, cells: tuple[int, int]):
    """One plan as a PIL image (``size`` × ``size``) and its grid size in pixels."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    cols, rows = cells
    grid_px = (size * 0.84) / max(cols, rows)
    left, top = (size - cols * grid_px) / 2, (size - rows * grid_px) / 2

    def at(x: float, y: float) -> tuple[float, float]:
        return left + x * grid_px, top + y * grid_px

    wall = max(2, round(grid_px / 8))
    for x0, y0, x1, y1 in _split(rng, (0, 0, cols, rows), depth=3):
        draw.rectangle([*at(x0, y0), *at(x1, y1)], outline="black", width=max(1, wall // 2))
        if x0 > 0:  # a door in the room's inner left wall
            door = rng.uniform(y0 + 0.3, y1 - 1.0)
            draw.line([*at(x0, door), *at(x0, door + 0.8)], fill="white", width=wall + 2)
            draw.arc([*at(x0, door - 0.8), *at(x0 + 1.6, door + 0.8)], 0, 90, fill="black", width=1)
        if y0 > 0:  # and in its inner top wall
            door = rng.uniform(x0 + 0.3, x1 - 1.0)
            draw.line([*at(door, y0), *at(door + 0.8, y0)], fill="white", width=wall + 2)
    draw.rectangle([*at(0, 0), *at(cols, rows)], outline="black", width=wall)
    for _ in range(rng.randint(2, 5)):  # windows: thin double lines in the outer wall
        x = rng.uniform(0.5, cols - 1.5)
        for offset in (-wall / 3, wall / 3):
            draw.line([at(x, 0)[0], at(x, 0)[1] + offset, at(x + 1, 0)[0], at(x + 1, 0)[1] + offset], fill="gray", width=1)
    return image, grid_px


def write_sample_plans(out: str | Path, count: int = 24, *, size: int = 512, seed: int = 0) -> Path:
    """``out/plan_NNN_{1f,2f}.png`` with the guide's same-name JSON beside each; returns ``out``."""
    from kitaeru.core.storage import atomic_path, atomic_write_json, ensure_writable_dir

    folder = ensure_writable_dir(out)
    rng = random.Random(seed)
    for i in range(count):
        floor = "1f" if i % 2 == 0 else "2f"
        cells = (rng.randint(6, 12), rng.randint(5, 10))
        image, grid_px = draw_plan(rng, size, cells)
        name = f"plan_{i:03d}_{floor}"
        with atomic_path(folder / f"{name}.png") as tmp:
            image.save(tmp, format="PNG")
        atomic_write_json(folder / f"{name}.json", {"grid_px": round(grid_px, 2), "grid_mm": GRID_MM, "floor": floor})
    return folder
