"""Floor-plan images and their captions: pairing, the caption template, the prepared dataset.

A caption comes, in order, from a same-name ``.json`` (the guide's v1.0 keys ``grid_px``,
``grid_mm``, ``floor``, or the v2.0 structural format whose ``metadata``/``layout`` carry the floor
and grid), from a same-name ``.txt``/``.caption`` file, or from the default (floor ``1f``/``2f``
read from the file name, grid 910 mm). A ``.txt``/``.caption`` file with several non-empty lines
gives the image several captions (training draws one per step, as the diffusers scripts do).

``prepare`` writes what both kitaeru and the diffusers example scripts read: ``images/`` +
``metadata.jsonl`` with the training rows only (``file_name``/``text``: the one metadata file that
``datasets``' imagefolder, and so ``--train_data_dir``, reads), and the guide's tables of every
image with its split (``captions.csv``, ``captions.json``). No other file may be named
``metadata.*`` or carry a split word (``train``, ``val``, ``test``) in its name: imagefolder would
read it as a second metadata file or as a split of its own.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kitaeru.core.errors import DataError
from kitaeru.core.storage import atomic_write_json, atomic_write_text

from .config import CAPTION_TEMPLATE

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_GRID_MM = 910
DEFAULT_GRID_PX = 107.5
V1_KEYS = ("grid_px", "grid_mm", "floor")
FLOOR_IN_NAME = re.compile(r"(?<![0-9a-z])([12])f(?![a-z])", re.IGNORECASE)
CSV_COLUMNS = ("file_name", "caption", "floor", "grid_mm", "grid_px", "caption_source", "width", "height", "split",
               "captions")
CAPTIONS_CSV, CAPTIONS_JSON, METADATA_JSONL = "captions.csv", "captions.json", "metadata.jsonl"


@dataclass
class PlanItem:
    file_name: str  # relative to the dataset folder
    caption: str
    floor: str
    grid_mm: float
    grid_px: float
    caption_source: str  # json-v1.0 | json-v2.0 | txt | default
    width: int = 0
    height: int = 0
    split: str = ""
    captions: list[str] = field(default_factory=list)  # all of the image's captions (the first is ``caption``)

    def __post_init__(self) -> None:
        if not self.captions:
            self.captions = [self.caption]


def caption_for(floor: str, grid_mm: float) -> str:
    return CAPTION_TEMPLATE.format(floor=floor, grid_mm=_number(grid_mm))


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def floor_from_name(name: str) -> str:
    match = FLOOR_IN_NAME.search(Path(name).stem)
    return f"{match.group(1)}f" if match else "1f"


def _normal_floor(value: Any, where: Path) -> str:
    text = str(value).strip().lower()
    if re.fullmatch(r"[0-9]+", text):
        text += "f"
    if not re.fullmatch(r"[0-9]+f", text):
        raise DataError(f"{where}: floor must look like '1f' or '2f' (got {value!r})")
    return text


def _positive(value: Any, key: str, where: Path) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key} must be a number (got {value!r})") from None
    if number <= 0:
        raise DataError(f"{where}: {key} must be positive (got {value!r})")
    return number


def read_plan_json(path: Path, image_name: str) -> tuple[str, float, float, str]:
    """(floor, grid_mm, grid_px, format) of a floor-plan JSON, or a one-line DataError."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with {', '.join(V1_KEYS)} (v1.0) or version/layout (v2.0)")
    version = str(data.get("version", ""))
    if version.startswith("2") or "layout" in data:
        # v2.0: the structure (layout bounds, zones, elements) with its floor and grid in metadata/grid/layout.
        layout = data.get("layout")
        if not isinstance(layout, dict):
            raise DataError(f"{path}: a v2.0 floor plan needs a 'layout' object (bounds, zones, elements)")
        places = [data, data.get("metadata") or {}, data.get("grid") or {}, layout, layout.get("grid") or {}]

        def find(*keys: str) -> Any:
            for place in places:
                if isinstance(place, dict):
                    for key in keys:
                        if place.get(key) is not None:
                            return place[key]
            return None

        floor = find("floor")
        grid_mm = find("grid_mm", "size_mm", "mm")
        grid_px = find("grid_px", "size_px", "px")
        return (_normal_floor(floor, path) if floor is not None else floor_from_name(image_name),
                _positive(grid_mm, "grid_mm", path) if grid_mm is not None else DEFAULT_GRID_MM,
                _positive(grid_px, "grid_px", path) if grid_px is not None else DEFAULT_GRID_PX, "json-v2.0")
    present = [k for k in V1_KEYS if k in data]
    if not present:
        raise DataError(f"{path}: none of the floor-plan keys {', '.join(V1_KEYS)} (v1.0) nor version 2.0 with a "
                        f"layout (keys found: {', '.join(sorted(data)) or 'none'})")
    floor = _normal_floor(data["floor"], path) if "floor" in data else floor_from_name(image_name)
    grid_mm = _positive(data["grid_mm"], "grid_mm", path) if "grid_mm" in data else DEFAULT_GRID_MM
    grid_px = _positive(data["grid_px"], "grid_px", path) if "grid_px" in data else DEFAULT_GRID_PX
    return floor, grid_mm, grid_px, "json-v1.0"


def caption_item(image: Path, file_name: str) -> PlanItem:
    """The caption of one image from its same-name JSON, text file or the default."""
    json_path = image.with_suffix(".json")
    if json_path.is_file():
        floor, grid_mm, grid_px, source = read_plan_json(json_path, image.name)
        return PlanItem(file_name, caption_for(floor, grid_mm), floor, grid_mm, grid_px, source)
    floor = floor_from_name(image.name)
    for suffix in (".txt", ".caption"):
        text_path = image.with_suffix(suffix)
        if text_path.is_file():
            lines = text_path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
            captions = list(dict.fromkeys(" ".join(line.split()) for line in lines if line.strip()))
            if captions:
                return PlanItem(file_name, captions[0], floor, DEFAULT_GRID_MM, DEFAULT_GRID_PX, "txt", captions=captions)
    return PlanItem(file_name, caption_for(floor, DEFAULT_GRID_MM), floor, DEFAULT_GRID_MM, DEFAULT_GRID_PX, "default")


def find_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"{folder}: not found or not a folder")
    images = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                    key=lambda p: _natural_key(p.name))
    if not images:
        raise DataError(f"{folder}: no images (*.png, *.jpg) found")
    return images


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def image_size_or_reason(path: Path, min_size: int) -> tuple[tuple[int, int] | None, str | None]:
    """((w, h), None) for a usable image; (None, reason) for a corrupt or too small one."""
    from PIL import Image, UnidentifiedImageError

    from kitaeru.data.images import ImageRejected, check_image_size, pil_open

    try:
        with pil_open(path) as im:  # size limits from the header, before any pixel is decoded
            check_image_size(*im.size, str(path))
            im.verify()
        with pil_open(path) as im:
            im.load()
            size = im.size
    except ImageRejected as exc:
        return None, str(exc).split(": ", 1)[-1]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return None, f"unreadable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    if min(size) < min_size:
        return None, f"too small ({size[0]}x{size[1]} < {min_size} px)"
    return size, None


def scan_folder(folder: Path, min_size: int) -> tuple[list[tuple[Path, PlanItem]], list[dict[str, str]]]:
    """Every usable image of ``folder`` with its caption, and the skipped ones with the reason.

    Caption problems (a JSON without the keys, malformed JSON) are errors, not skips: they are the
    user's metadata, and a silently default caption would train the wrong thing.
    """
    pairs, skipped = [], []
    for image in find_images(folder):
        item = caption_item(image, image.name)
        size, reason = image_size_or_reason(image, min_size)
        if reason is not None:
            skipped.append({"path": str(image), "reason": reason})
            continue
        item.width, item.height = size
        pairs.append((image, item))
    if not pairs:
        raise DataError(f"{folder}: no usable images ({len(skipped)} skipped: {skipped[0]['reason']})")
    return pairs, skipped


def split_items(items: list[PlanItem], val_fraction: float, seed: int) -> None:
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(items) * val_fraction)) if len(items) > 1 else 0
    if val_fraction > 0 and n_val == 0 and len(items) > 1:
        n_val = 1
    val = set(order[:n_val])
    for i, item in enumerate(items):
        item.split = "val" if i in val else "train"


def _csv_text(items: list[PlanItem]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for item in items:
        row = {k: (_number(v) if isinstance(v, float) else v) for k, v in asdict(item).items()}
        row["captions"] = json.dumps(item.captions, ensure_ascii=False) if len(item.captions) > 1 else ""
        writer.writerow(row)
    return buf.getvalue()


def _copy_image(source: Path, target: Path) -> None:
    """Copy through a temporary name; a failed copy (a full disk) leaves neither file behind."""
    from kitaeru.core.errors import disk_error

    tmp = target.with_name(f".{target.name}.tmp")
    try:
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    except OSError as exc:
        raise (disk_error(exc, target) or exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def _jsonl_text(items: list[PlanItem]) -> str:
    """imagefolder's metadata: ``text`` a string, or a list for all rows when any image has several
    captions (one Arrow type per column; the diffusers script draws one of a list)."""
    several = any(len(i.captions) > 1 for i in items)
    return "".join(json.dumps({"file_name": i.file_name, "text": i.captions if several else i.caption},
                              ensure_ascii=False) + "\n" for i in items)


def prepare_dataset(images: Path, output_dir: Path, *, val_fraction: float, seed: int, min_size: int) -> dict:
    """Write the prepared dataset; every caption is checked before anything is written."""
    from kitaeru.core.errors import disk_error

    pairs, skipped = scan_folder(images, min_size)
    items = [item for _, item in pairs]
    split_items(items, val_fraction, seed)
    if output_dir.resolve() == images.resolve():
        raise DataError(f"{output_dir}: write the prepared dataset to another folder than the images")
    image_dir = output_dir / "images"
    try:
        image_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise (disk_error(exc, image_dir) or exc) from None
    for source, item in pairs:
        _copy_image(source, image_dir / source.name)
        item.file_name = f"images/{source.name}"
    writes = [(CAPTIONS_CSV, lambda p: atomic_write_text(p, _csv_text(items))),
              (CAPTIONS_JSON, lambda p: atomic_write_json(p, [asdict(i) for i in items])),
              (METADATA_JSONL, lambda p: atomic_write_text(p, _jsonl_text([i for i in items if i.split == "train"]))),
              ("skipped.json", lambda p: atomic_write_json(p, skipped))]
    for name, write in writes:
        try:
            write(output_dir / name)
        except OSError as exc:
            raise (disk_error(exc, output_dir / name) or exc) from None
    sources: dict[str, int] = {}
    files: dict[str, list[str]] = {}
    for item in items:
        sources[item.caption_source] = sources.get(item.caption_source, 0) + 1
        files.setdefault(item.caption_source, []).append(Path(item.file_name).name)
    return {
        "status": "completed", "output_dir": str(output_dir), "images": len(items),
        "train": sum(i.split == "train" for i in items), "val": sum(i.split == "val" for i in items),
        "caption_sources": sources, "caption_files": files,
        "several_captions": sum(len(i.captions) > 1 for i in items),
        "skipped": skipped, "files": ["images/", METADATA_JSONL, CAPTIONS_CSV, CAPTIONS_JSON, "skipped.json"],
    }


# ---- reading a dataset for training ---------------------------------------------------------
@dataclass
class TrainItem:
    path: Path
    captions: list[str]

    @property
    def caption(self) -> str:
        return self.captions[0]


def _csv_rows(path: Path, train_only: bool) -> list[tuple[str, list[str]]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = {"file_name", "caption"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        rows = []
        for n, r in enumerate(reader, 2):
            if train_only and (r.get("split") or "train") != "train":
                continue
            captions = [r["caption"]]
            if r.get("captions"):
                try:
                    captions = [str(c) for c in json.loads(r["captions"])] or captions
                except (ValueError, TypeError):
                    raise DataError(f"{path}: line {n}: 'captions' must be a JSON list of strings") from None
            rows.append((r["file_name"], captions))
    return rows


def _jsonl_rows(path: Path) -> list[tuple[str, list[str]]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if record.get("split", "train") != "train":
                continue
            text = record.get("text") or record["caption"]
            captions = [str(c) for c in text] if isinstance(text, list) else [str(text)]
            if not captions or not all(captions):
                raise KeyError("text")
            rows.append((record["file_name"], captions))
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise DataError(f"{path}: line {n} needs file_name and text") from None
    return rows


def training_items(data_dir: Path, min_size: int = 8) -> tuple[list[TrainItem], list[dict[str, str]], str]:
    """(items, skipped, source): from captions.csv (its train rows), train.csv (folders prepared by
    earlier versions), metadata.jsonl or a plain image folder."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: not found or not a folder")
    if (data_dir / CAPTIONS_CSV).is_file():
        source, rows = CAPTIONS_CSV, _csv_rows(data_dir / CAPTIONS_CSV, train_only=True)
    elif (data_dir / "train.csv").is_file():
        source, rows = "train.csv", _csv_rows(data_dir / "train.csv", train_only=False)
    elif (data_dir / METADATA_JSONL).is_file():
        source, rows = METADATA_JSONL, _jsonl_rows(data_dir / METADATA_JSONL)
    else:
        pairs, skipped = scan_folder(data_dir, min_size)
        return [TrainItem(path, item.captions) for path, item in pairs], skipped, "image folder"
    if not rows:
        raise DataError(f"{data_dir / source}: no training images listed")
    items, skipped = [], []
    for file_name, captions in rows:
        path = data_dir / file_name
        if not path.is_file():
            skipped.append({"path": str(path), "reason": "listed but missing"})
            continue
        _, reason = image_size_or_reason(path, min_size)
        if reason is not None:
            skipped.append({"path": str(path), "reason": reason})
            continue
        items.append(TrainItem(path, captions))
    if not items:
        raise DataError(f"{data_dir / source}: none of the {len(rows)} listed images is usable")
    return items, skipped, source


def quick_check_data_dir(data_dir: Path) -> None:
    """Cheap existence checks (before any heavy import)."""
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir}: not found or not a folder")
    if any((data_dir / name).is_file() for name in (CAPTIONS_CSV, "train.csv", METADATA_JSONL)):
        return
    if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in data_dir.iterdir() if p.is_file()):
        raise DataError(f"--data-dir {data_dir}: no images (*.png, *.jpg) and no captions.csv/metadata.jsonl found")
