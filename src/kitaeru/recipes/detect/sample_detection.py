"""A generated YOLO detection dataset whose labels are exactly what each picture shows.

``kitaeru sample detection --out DIR`` writes ``DIR/data.yaml`` and ``images/{train,val}``,
``labels/{train,val}`` in the Ultralytics layout, so ``kitaeru detect train -d DIR/data.yaml``
runs offline and shows a real result in about a minute on a laptop CPU.

Each picture is a textured background (a soft colour gradient, low-contrast blotches, fine noise
and a few thin lines, all desaturated) with one to four objects of three classes drawn on it:

* ``circle`` — a filled disc, warm red/orange;
* ``square`` — a filled axis-aligned square, blue;
* ``triangle`` — a filled triangle, turned by a random angle, green/yellow.

Each object's box is computed from the exact geometry drawn (the triangle's from its rotated
corners) and written as a YOLO label line; objects never overlap, so every drawn object is
wholly visible and labelled, and nothing else in the picture looks like one. Size, position,
shade, outline and background vary with the seed; the same seed gives the same dataset.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

GENERATOR_VERSION = 1
CLASSES = ("circle", "square", "triangle")
# Base colour of each class; every object gets a jittered shade of it.
CLASS_COLOURS = {"circle": (215, 70, 45), "square": (45, 95, 215), "triangle": (90, 190, 40)}
MARKER = ".kitaeru-sample-detection"


def write_sample_detection(out_dir: str | os.PathLike, *, train: int = 160, val: int = 40, image_size: int = 160,
                           seed: int = 0, max_objects: int = 4) -> Path:
    """Write the dataset into ``out_dir`` (replacing an earlier sample written there) and return
    the path of its ``data.yaml``."""
    out = Path(out_dir)
    _prepare(out)
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        (out / "images" / split).mkdir(parents=True)
        (out / "labels" / split).mkdir(parents=True)
        for index in range(count):
            image, boxes = render_image(rng, image_size, max_objects)
            stem = f"{split}_{index:04d}"
            image.save(out / "images" / split / f"{stem}.jpg", quality=92)
            lines = [f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for c, x, y, w, h in boxes]
            (out / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    data_yaml = out / "data.yaml"
    data_yaml.write_text(
        f"# kitaeru sample detection (seed {seed}): {train} train / {val} val images of {image_size} px.\n"
        "# Paths are relative to this file's folder.\n"
        f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    )
    (out / MARKER).write_text(f"{GENERATOR_VERSION}\n")
    return data_yaml


def _prepare(out: Path) -> None:
    """An empty folder to write into: a folder holding anything but an earlier sample is refused."""
    from kitaeru.core.errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ConfigError(f"--out {out}: folder is not empty (choose a new folder)")
        for name in ("images", "labels"):
            shutil.rmtree(out / name, ignore_errors=True)
        for cache in out.glob("*.cache"):
            cache.unlink()
    out.mkdir(parents=True, exist_ok=True)


def render_image(rng: np.random.Generator, size: int, max_objects: int) -> tuple[Image.Image, list[tuple]]:
    """One picture and its labels ``(class, x_centre, y_centre, width, height)``, normalised."""
    image = _background(rng, size)
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float, float]] = []
    labels = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(30):
            cls = int(rng.integers(len(CLASSES)))
            side = float(rng.uniform(0.18, 0.38)) * size
            cx, cy = (float(rng.uniform(side / 2 + 1, size - side / 2 - 1)) for _ in range(2))
            shape = _shape(CLASSES[cls], cx, cy, side, rng)
            box = _bounds(shape)
            if all(_apart(box, other) for other in placed):
                break
        else:
            continue  # no free place left for another object: the picture keeps fewer
        _draw(draw, CLASSES[cls], shape, rng)
        placed.append(box)
        x0, y0, x1, y1 = box
        labels.append((cls, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size))
    return image, labels


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    base = rng.uniform(70, 185, size=3)
    tilt = rng.uniform(-40, 40, size=3)
    ramp = np.linspace(-0.5, 0.5, size)[None, :, None] * tilt + base
    pixels = np.repeat(ramp, size, axis=0)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = grey + 0.35 * (pixels - grey)  # desaturated: the objects are what carries colour
    blotches = rng.normal(0, 1, size=(max(size // 16, 2), max(size // 16, 2)))
    blotches = np.asarray(Image.fromarray(blotches.astype(np.float32)).resize((size, size), Image.BICUBIC))
    pixels = pixels + 14 * blotches[:, :, None] + rng.normal(0, 6, size=(size, size, 1))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):  # thin grey lines: edges that are not objects
        level = int(rng.integers(40, 220))
        points = [tuple(float(v) for v in rng.uniform(0, size, 2)) for _ in range(2)]
        draw.line(points, fill=(level, level, level), width=int(rng.integers(1, 3)))
    return image.filter(ImageFilter.GaussianBlur(0.6))


def _shape(name: str, cx: float, cy: float, side: float, rng: np.random.Generator) -> list[tuple[float, float]]:
    """The drawn outline's points (a circle by its bounding corners)."""
    r = side / 2
    if name == "triangle":
        turn = float(rng.uniform(0, 2 * math.pi))
        return [(cx + r * math.cos(turn + k * 2 * math.pi / 3), cy + r * math.sin(turn + k * 2 * math.pi / 3))
                for k in range(3)]
    return [(cx - r, cy - r), (cx + r, cy + r)]


def _bounds(shape: list[tuple[float, float]]) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in shape], [p[1] for p in shape]
    return min(xs), min(ys), max(xs), max(ys)


def _apart(a: tuple[float, ...], b: tuple[float, ...], gap: float = 2.0) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _draw(draw: ImageDraw.ImageDraw, name: str, shape: list[tuple[float, float]], rng: np.random.Generator) -> None:
    shade = float(rng.uniform(0.75, 1.2))
    colour = tuple(int(np.clip(c * shade + rng.normal(0, 12), 0, 255)) for c in CLASS_COLOURS[name])
    outline = tuple(int(c * 0.55) for c in colour)
    if name == "circle":
        draw.ellipse(shape, fill=colour, outline=outline, width=2)
    elif name == "square":
        draw.rectangle(shape, fill=colour, outline=outline, width=2)
    else:
        draw.polygon(shape, fill=colour, outline=outline)
