"""What the Map & search page draws: points with 2-D coordinates, metadata, an image, and a backend.

Two kinds of map under the roots, both with coordinates already computed (nothing is projected again):

* a multimodal output (``scenes_with_umap.json``, else ``vector_db.json``): one point per scene, its
  ``umap_coords``, metadata (time, weather, location, ...) to colour by; searched with
  :class:`kitaeru.serve.multimodal_backend.MultimodalBackend`, the code behind ``kitaeru serve``;
* a ``kitaeru map --output-json`` document (``"format": "kitaeru-map/1"``) of an embed output; searched
  through a Faiss index under the roots (``kitaeru serve --index``'s backend) when one is chosen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .runs import MAX_DEPTH, SKIP_DIRS, Roots, read_json

MAP_FORMAT = "kitaeru-map/1"
HIDDEN = {"umap_coords", "image_url", "descriptions", "text_embedding", "image_embedding", "image_path", "description"}


@dataclass
class MapSource:
    kind: str  # "multimodal" | "map-json"
    path: Path  # the output folder, or the JSON document
    root: Path

    @property
    def name(self) -> str:
        try:
            rel = str(self.path.relative_to(self.root))
        except ValueError:
            rel = self.path.name
        return f"{rel} ({self.kind})"


@dataclass
class MapData:
    ids: list[str]
    x: list[float]
    y: list[float]
    labels: list[str]
    images: list[str | None]  # absolute image paths (checked against the roots before reading)
    columns: dict[str, list[Any]] = field(default_factory=dict)
    captions: list[list[str]] = field(default_factory=list)  # every caption of a scene (multimodal)

    def __len__(self) -> int:
        return len(self.ids)


def find_map_sources(roots: Roots) -> list[MapSource]:
    sources: list[MapSource] = []
    for root in roots.paths:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in _walk(root):
            folder = Path(dirpath)
            if "scenes_with_umap.json" in filenames or "vector_db.json" in filenames:
                sources.append(MapSource("multimodal", folder, root))
            for name in filenames:
                if name.endswith(".json") and name not in ("training_result.json", "vector_db.json",
                                                           "scenes_with_umap.json", "query_encoder.json"):
                    if _is_map_document(folder / name):
                        sources.append(MapSource("map-json", folder / name, root))
    return sources


def _walk(root: Path):
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith(".")
                             and not os.path.islink(os.path.join(dirpath, d)) and depth < MAX_DEPTH)
        yield dirpath, dirnames, filenames


def _is_map_document(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(400).decode("utf-8", errors="replace")
    except OSError:
        return False
    return MAP_FORMAT in head


def load_map(source: MapSource) -> MapData:
    """The points of ``source``; raises ``ValueError`` with a one-line reason when unusable."""
    if source.kind == "multimodal":
        return _multimodal_points(source.path)
    return _document_points(source.path)


def _multimodal_points(folder: Path) -> MapData:
    records = None
    for name in ("scenes_with_umap.json", "vector_db.json"):
        path = folder / name
        if not path.is_file():
            continue
        data, error = read_json(path)
        if error:
            raise ValueError(error)
        records = data.get("scenes") if isinstance(data, dict) else data
        if isinstance(records, list):
            break
        raise ValueError(f"{path}: not a list of scenes")
    if not records:
        raise ValueError(f"{folder}: no scenes with UMAP coordinates")
    data_dir = _data_dir(folder)
    out = MapData([], [], [], [], [], {})
    flat_rows = []
    for r in records:
        xy = r.get("umap_coords") if isinstance(r, dict) else None
        if not (isinstance(xy, list) and len(xy) == 2):
            continue
        out.ids.append(str(r.get("scene_id")))
        out.x.append(float(xy[0]))
        out.y.append(float(xy[1]))
        text = str(r.get("description") or "")
        out.labels.append(f"{r.get('scene_id')}: {text}" if text else str(r.get("scene_id")))
        many = r.get("descriptions")
        out.captions.append([str(c) for c in many] if isinstance(many, list) and many else ([text] if text else []))
        stored = str(r.get("image_path") or "").replace("\\", "/")
        if stored and data_dir and not os.path.isabs(stored):
            out.images.append(str(Path(data_dir) / stored))
        else:
            out.images.append(stored or None)
        flat = {}
        for key, value in r.items():
            if key == "metadata" and isinstance(value, dict):
                flat.update({k: v for k, v in value.items() if isinstance(v, (str, int, float, bool)) or v is None})
            elif key not in HIDDEN and key != "scene_id" and (isinstance(value, (str, int, float, bool)) or value is None):
                flat[key] = value
        flat_rows.append(flat)
    if not out.ids:
        raise ValueError(f"{folder}: no scene has umap_coords (train again with this version of kitaeru)")
    names = list(dict.fromkeys(k for f in flat_rows for k in f))
    out.columns = {n: [f.get(n) for f in flat_rows] for n in names}
    return out


def _data_dir(folder: Path) -> str | None:
    """The scene folder a multimodal output was trained on (its training_result.json / config.yaml),
    made absolute: a relative record meant the training's working directory, which is not the
    dashboard's (see :func:`resolve_recorded`)."""
    result, _ = read_json(folder / "training_result.json")
    cwd = result.get("cwd") if isinstance(result, dict) else None
    if isinstance(result, dict):
        data = result.get("data")
        if isinstance(data, dict) and data.get("source"):
            return resolve_recorded(str(data["source"]), folder, cwd)
    config = folder / "config.yaml"
    if config.is_file():
        import yaml

        try:
            cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        if isinstance(cfg, dict) and cfg.get("data_dir"):
            return resolve_recorded(str(cfg["data_dir"]), folder, cwd)
    return None


def resolve_recorded(recorded: str, run_dir: Path, cwd: Any = None) -> str:
    """An absolute form of a path a run recorded: as is when absolute (or a URL); else against the
    recorded working directory, the run folder, or the nearest folder above the run folder where
    it exists (``runs/mm/sample_data`` recorded by a run in ``<cwd>/runs/mm``)."""
    if "://" in recorded or os.path.isabs(recorded):
        return recorded
    bases = ([Path(str(cwd))] if cwd else []) + [run_dir, *run_dir.parents]
    for base in bases:
        candidate = base / recorded
        if candidate.is_dir():
            return str(candidate)
    return str(run_dir / recorded)


def _document_points(path: Path) -> MapData:
    data, error = read_json(path)
    if error:
        raise ValueError(error)
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, list) or not points:
        raise ValueError(f"{path}: no points")
    colour = data.get("color_by") or "color"
    out = MapData([], [], [], [], [], {colour: []})
    for p in points:
        try:
            x, y = float(p["x"]), float(p["y"])
        except (KeyError, TypeError, ValueError):
            continue
        out.ids.append(str(p.get("id")))
        out.x.append(x)
        out.y.append(y)
        label = str(p.get("label") or p.get("id"))
        out.labels.append(label)
        out.images.append(label if os.path.isabs(label) else None)
        out.captions.append([])
        out.columns[colour].append(p.get("color"))
    if not any(v is not None for v in out.columns[colour]):
        out.columns = {}
    if not out.ids:
        raise ValueError(f"{path}: no point has x and y")
    return out


def default_colour_column(data: MapData) -> str | None:
    """The column ``kitaeru map`` colours by when none is named (weather, time, location, ...)."""
    from kitaeru.viz.map_figures import default_colour_column as choose

    return choose(data.columns)


def sample_indices(n: int, limit: int, seed: int = 0) -> list[int]:
    """At most ``limit`` of ``range(n)``, spread evenly and reproducibly (thumbnails of big maps)."""
    if n <= limit:
        return list(range(n))
    import numpy as np

    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def find_indexes(roots: Roots) -> list[Path]:
    """Faiss index files under the roots (``kitaeru index build`` outputs)."""
    found = []
    for root in roots.paths:
        if root.is_dir():
            for dirpath, _, filenames in _walk(root):
                found += [Path(dirpath) / f for f in filenames if f.endswith((".faiss", ".index"))]
    return sorted(found)


def hits_to_rows(hits: list[dict[str, Any]], data: MapData) -> list[int]:
    """Map rows of the search hits (scene_id for multimodal hits, the row id for index hits)."""
    where = {pid: i for i, pid in enumerate(data.ids)}
    rows = []
    for hit in hits:
        for key in ("scene_id", "id"):
            value = hit.get(key)
            if value is not None and str(value) in where:
                rows.append(where[str(value)])
                break
    return rows


def image_bytes(roots: Roots, path: str | None) -> bytes | None:
    """The image at ``path`` if it lies inside a root; None otherwise (never raises)."""
    if not path:
        return None
    try:
        return roots.read_bytes(path, limit=20_000_000)
    except (OSError, ValueError):
        return None


def selected_rows(event: Any, trace_rows: list[list[int]]) -> list[int]:
    """Map rows of a plotly selection event (``trace_rows[curve][point_index]`` is the row)."""
    try:
        points = event.selection.points if event else []
    except AttributeError:
        points = (event or {}).get("selection", {}).get("points", [])
    rows = []
    for p in points or []:
        curve, index = p.get("curve_number"), p.get("point_index")
        if curve is not None and index is not None and 0 <= curve < len(trace_rows) and 0 <= index < len(trace_rows[curve]):
            rows.append(trace_rows[curve][index])
    return list(dict.fromkeys(rows))


# Names of numeric columns that still are categories (cluster 3 is not "more" than cluster 2).
_CATEGORY_NAMES = ("cluster", "class", "label", "id", "category", "kind", "split")


def is_continuous(name: str, values: list[Any]) -> bool:
    """Whether a column gets a continuous colour scale: numbers (not booleans), not a category by
    name, and either fractional or with more than 5 distinct values."""
    if any(name.lower().endswith(word) for word in _CATEGORY_NAMES):
        return False
    numbers = [v for v in values if v is not None]
    if not numbers or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return False
    return any(isinstance(v, float) and not float(v).is_integer() for v in numbers) or len(set(numbers)) > 5


def selection_rows(data: MapData, rows: list[int]) -> list[dict[str, Any]]:
    """One record per selected point: its id, label, coordinates, image and every metadata field."""
    out = []
    for i in rows:
        record = {"id": data.ids[i], "label": data.labels[i], "x": data.x[i], "y": data.y[i],
                  "image": data.images[i] or ""}
        record.update({name: values[i] for name, values in data.columns.items()})
        out.append(record)
    return out


def rows_csv(records: list[dict[str, Any]]) -> str:
    """The records as CSV text (every field a column, in first-seen order)."""
    import csv
    import io

    names = list(dict.fromkeys(k for r in records for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def label_offsets(count: int, radius: float = 34.0) -> list[tuple[float, float]]:
    """Pixel offsets that spread ``count`` hit labels around their points on widening rings, so
    labels of hits that lie on top of each other do not overlap."""
    import math

    out = []
    for n in range(count):
        ring, slot = divmod(n, 8)
        angle = 2 * math.pi * slot / 8 + ring * math.pi / 8
        out.append((round((radius + 18 * ring) * math.cos(angle), 1), round((radius + 18 * ring) * math.sin(angle), 1)))
    return out


def open_query_image(data: bytes, name: str, min_side: int | None = None):
    """A search query image through the API's own limits (bytes, then pixels and aspect ratio read
    from the header before any decoding): ``ValueError``/``DataError`` with one line otherwise."""
    from kitaeru.data.images import open_image
    from kitaeru.serve.app import MAX_UPLOAD_PIXELS
    from kitaeru.serve.limits import MAX_UPLOAD_BYTES

    if not data:
        raise ValueError(f"{name}: empty upload")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ValueError(f"{name}: larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    import io

    buffer = io.BytesIO(data)
    buffer.name = name  # errors name the upload
    return open_image(buffer, min_side=min_side, max_pixels=MAX_UPLOAD_PIXELS)
