"""YOLO ``data.yaml`` datasets: read, check, and write a resolved copy for Ultralytics.

Checks, each a one-line :class:`DataError` naming the file and field:

* the YAML exists, parses, is a mapping, and has ``names`` (list or ``{id: name}``; ``nc`` agrees);
* ``train`` and ``val`` (and ``test`` when given) point at folders or list files that exist;
* a relative ``path:`` is resolved against the YAML's own folder (Ultralytics would resolve it
  against its global datasets folder, which surprises users); no ``path:`` means that folder.

Images are opened (header and :meth:`~PIL.Image.Image.verify`, with PIL's own opener
:func:`kitaeru.data.images.pil_open` and the size limits of :func:`kitaeru.data.images.check_image_size`):
an unreadable image is a *counted skip* with its reason, and a split whose every image is unreadable
is an error before any run folder exists. Label files are checked line by line (column count,
integer class id in range, coordinates normalised): a bad label file makes its image a *counted
skip* (Ultralytics drops such images too), listed with the reason; a split with no usable image at
all is an error.

:func:`write_resolved_yaml` writes the absolute-path copy that Ultralytics is given (the
``download:`` key is dropped so nothing is ever fetched or executed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from kitaeru.core.errors import DataError

IMAGE_EXTENSIONS = (".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm", ".heic")
SPLITS = ("train", "val", "test")
# Ultralytics tolerates 1% outside [0, 1]; we accept exactly what it accepts so our counts match its.
COORD_TOLERANCE = 0.01


@dataclass
class LabelProblem:
    image: str
    label: str
    reason: str

    def as_skip(self) -> dict[str, str]:
        if self.label == self.image:  # the image itself is unreadable
            return {"path": self.image, "reason": self.reason}
        return {"path": self.image, "reason": f"{self.label}: {self.reason}"}


@dataclass
class SplitSummary:
    """What one split holds: images, labelled/empty/missing label files, bad ones."""

    sources: list[Path]
    images: int = 0
    labelled: int = 0
    empty: int = 0
    missing_labels: int = 0
    instances: int = 0
    problems: list[LabelProblem] = field(default_factory=list)
    unreadable: list[LabelProblem] = field(default_factory=list)

    @property
    def usable(self) -> int:
        return self.images - len(self.problems) - len(self.unreadable)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sources": [str(s) for s in self.sources],
            "images": self.images,
            "labelled": self.labelled,
            "empty_labels": self.empty,
            "missing_labels": self.missing_labels,
            "instances": self.instances,
            "bad_labels": len(self.problems),
            "unreadable_images": len(self.unreadable),
        }


@dataclass
class YoloDataset:
    """A checked ``data.yaml``: its location, root, class names and split sources."""

    yaml_path: Path
    root: Path
    names: dict[int, str]
    splits: dict[str, list[Path]]
    raw: dict[str, Any]
    summaries: dict[str, SplitSummary] = field(default_factory=dict)

    @property
    def nc(self) -> int:
        return len(self.names)

    def images(self, split: str) -> list[Path]:
        return list_split_images(self.splits.get(split, []))

    @property
    def problems(self) -> list[LabelProblem]:
        return [p for s in self.summaries.values() for p in (*s.unreadable, *s.problems)]


def data_yaml_missing(value: str) -> DataError:
    """The one-line error for a ``--data-dir`` that is not there. An Ultralytics dataset name
    (``coco8.yaml``) is said to need the network: Ultralytics downloads those on first use, which
    kitaeru never does; the built-in sample is the offline way to a first run."""
    import importlib.util

    name = Path(value).name
    spec = importlib.util.find_spec("ultralytics")  # where it is installed, without importing it
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    if value == name and any((Path(root) / "cfg" / "datasets" / name).is_file() for root in roots):
        return DataError(f"--data-dir {value}: an Ultralytics dataset name; it downloads from the network on first use, "
                         "which kitaeru does not do. Give a local data.yaml (offline: kitaeru sample detection --out data/shapes)")
    return DataError(f"--data-dir {value}: data.yaml not found")


def load_data_yaml(path: str | os.PathLike) -> YoloDataset:
    """Read and check a ``data.yaml`` (structure and folders; labels are checked by :func:`check_labels`)."""
    import yaml

    from kitaeru.core.storage import is_remote

    if is_remote(path):
        raise DataError(f"--dataset {path}: remote datasets are not supported by Ultralytics; copy it to a local folder first")
    yaml_path = Path(path).expanduser()
    if not yaml_path.exists():
        raise DataError(f"--dataset {yaml_path}: not found")
    if yaml_path.is_dir():
        candidate = yaml_path / "data.yaml"
        if not candidate.is_file():
            raise DataError(f"--dataset {yaml_path}: is a folder without data.yaml (give the YAML file)")
        yaml_path = candidate
    yaml_path = yaml_path.resolve()
    try:
        text = yaml_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{yaml_path}: cannot read ({exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise DataError(f"{yaml_path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(raw, dict):
        raise DataError(f"{yaml_path}: expected a mapping with train/val/names, got {type(raw).__name__}")
    names = _parse_names(raw, yaml_path)
    root = _resolve_root(raw.get("path"), yaml_path)
    splits: dict[str, list[Path]] = {}
    for split in SPLITS:
        value = raw.get(split)
        if value in (None, ""):
            if split in ("train", "val"):
                raise DataError(f"{yaml_path}: '{split}' is missing (a folder of images, a list file, or a list of them)")
            continue
        entries = value if isinstance(value, list) else [value]
        sources = []
        for entry in entries:
            if not isinstance(entry, (str, os.PathLike)):
                raise DataError(f"{yaml_path}: '{split}' entries must be paths, got {entry!r}")
            source = Path(entry).expanduser()
            source = source if source.is_absolute() else (root / source)
            source = source.resolve()
            if not source.exists():
                raise DataError(f"{yaml_path}: {split}: {source} not found")
            sources.append(source)
        splits[split] = sources
    return YoloDataset(yaml_path=yaml_path, root=root, names=names, splits=splits, raw=raw)


def _parse_names(raw: dict, yaml_path: Path) -> dict[int, str]:
    names = raw.get("names")
    if names is None:
        raise DataError(f"{yaml_path}: 'names' is missing (the class names, as a list or {{id: name}})")
    if isinstance(names, list):
        parsed = {i: str(n) for i, n in enumerate(names)}
    elif isinstance(names, dict):
        try:
            parsed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as exc:
            raise DataError(f"{yaml_path}: 'names' keys must be integer class ids ({exc})") from exc
        if sorted(parsed) != list(range(len(parsed))):
            raise DataError(f"{yaml_path}: 'names' ids must be 0..{len(parsed) - 1} without gaps, got {sorted(parsed)[:10]}")
    else:
        raise DataError(f"{yaml_path}: 'names' must be a list or a mapping of id to name, got {type(names).__name__}")
    if not parsed:
        raise DataError(f"{yaml_path}: 'names' is empty")
    nc = raw.get("nc")
    if nc is not None and int(nc) != len(parsed):
        raise DataError(f"{yaml_path}: nc is {nc} but 'names' lists {len(parsed)} classes")
    return parsed


def _resolve_root(path_value: Any, yaml_path: Path) -> Path:
    if path_value in (None, ""):
        return yaml_path.parent
    root = Path(str(path_value)).expanduser()
    if not root.is_absolute():
        root = yaml_path.parent / root
    root = root.resolve()
    if not root.is_dir():
        raise DataError(f"{yaml_path}: path: {root} not found (relative paths are resolved against the YAML's folder)")
    return root


def list_split_images(sources: Iterable[Path]) -> list[Path]:
    """Images of a split: every image under folder sources, every line of ``.txt`` list files."""
    out: list[Path] = []
    for source in sources:
        if source.is_dir():
            out.extend(sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS))
        elif source.suffix.lower() == ".txt":
            base = source.parent
            for line in source.read_text(encoding="utf-8-sig").splitlines():
                line = line.strip()
                if not line:
                    continue
                item = Path(line)
                out.append((item if item.is_absolute() else base / item).resolve())
        elif source.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(source)
    return out


def label_path_for(image: Path) -> Path:
    """Ultralytics' convention: the last ``/images/`` in the path becomes ``/labels/``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def check_label_text(text: str, nc: int) -> tuple[int, str | None]:
    """``(instances, problem)`` for the contents of one label file; ``problem`` is ``None`` when fine."""
    rows = [line.split() for line in text.strip().splitlines() if line.strip()]
    for number, row in enumerate(rows, start=1):
        columns = len(row)
        if not (columns == 5 or (columns >= 7 and columns % 2 == 1)):
            return 0, f"line {number}: {columns} columns (expected 5: class x y w h, or a polygon: class x1 y1 x2 y2 x3 y3 ...)"
        try:
            values = [float(v) for v in row]
        except ValueError:
            return 0, f"line {number}: not numbers ({' '.join(row)[:60]})"
        cls = values[0]
        if cls != int(cls):
            return 0, f"line {number}: class id {row[0]} is not an integer"
        if not 0 <= int(cls) < nc:
            return 0, f"line {number}: class id {int(cls)} out of range 0..{nc - 1}"
        coords = values[1:]
        if max(coords) > 1 + COORD_TOLERANCE or min(coords) < -COORD_TOLERANCE:
            return 0, f"line {number}: coordinates must be normalised to 0..1, got {' '.join(row[1:])[:60]}"
        if columns == 5 and (coords[2] <= 0 or coords[3] <= 0):
            return 0, f"line {number}: box width and height must be positive"
    return len(rows), None


SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}
NOT_AN_IMAGE = "not an image (cannot identify the file format)"


def image_problem(image: Path) -> str | None:
    """Why ``image`` cannot be used (unreadable, corrupt, outside the size limits), or None.

    PIL's own opener is used (:func:`~kitaeru.data.images.pil_open`): Ultralytics' replacement of
    ``Image.open`` would answer a corrupt file with "No module named 'pi_heif'".
    """
    from PIL import Image, UnidentifiedImageError

    from kitaeru.data.images import ImageRejected, check_image_size, pil_open

    try:
        with pil_open(image) as im:
            check_image_size(*im.size, str(image))
            im.verify()
    except ImageRejected as exc:
        return str(exc).split(": ", 1)[-1]
    except UnidentifiedImageError:
        return NOT_AN_IMAGE
    except ImportError:  # a format plugin that is not installed: to the user, not an image they can use
        return NOT_AN_IMAGE
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"cannot read image ({text[:200]})"
    return None


def check_labels(dataset: YoloDataset, splits: Iterable[str] = ("train", "val")) -> dict[str, SplitSummary]:
    """Check every image and label file of ``splits``; bad ones become counted problems. Empty
    splits, and splits whose every image is unreadable, are errors."""
    for split in splits:
        if split not in dataset.splits:
            continue
        summary = SplitSummary(sources=dataset.splits[split])
        for image in dataset.images(split):
            summary.images += 1
            label = label_path_for(image)
            unreadable = image_problem(image)
            if unreadable:
                summary.unreadable.append(LabelProblem(str(image), str(image), unreadable))
                continue
            if not label.is_file():
                summary.missing_labels += 1
                continue
            try:
                text = label.read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                summary.problems.append(LabelProblem(str(image), str(label), f"cannot read ({exc})"))
                continue
            instances, problem = check_label_text(text, dataset.nc)
            if problem:
                summary.problems.append(LabelProblem(str(image), str(label), problem))
                continue
            summary.labelled += 1
            summary.instances += instances
            if instances == 0:
                summary.empty += 1
        if summary.images == 0:
            where = ", ".join(str(s) for s in summary.sources)
            raise DataError(f"{dataset.yaml_path}: {split}: no images found in {where}")
        if len(summary.unreadable) == summary.images:
            first = summary.unreadable[0]
            raise DataError(f"{dataset.yaml_path}: every {SPLIT_WORDS.get(split, split)} image is unreadable "
                            f"({summary.images} skipped, e.g. {first.image}: {first.reason})")
        if summary.usable == 0:
            first = summary.problems[0]
            raise DataError(
                f"{dataset.yaml_path}: {split}: all {summary.images} images have bad labels (e.g. {first.label}: {first.reason})"
            )
        dataset.summaries[split] = summary
    return dataset.summaries


def write_resolved_yaml(dataset: YoloDataset, target: str | os.PathLike, extra_train: Iterable[Path] = ()) -> Path:
    """Write the copy Ultralytics reads: absolute paths, names as ``{id: name}``, extra training sources."""
    import yaml

    from kitaeru.core.storage import atomic_write_text

    data: dict[str, Any] = {k: v for k, v in dataset.raw.items() if k not in ("path", "download", "names", "nc", *SPLITS)}
    data["path"] = str(dataset.root)
    for split, sources in dataset.splits.items():
        items = [str(s) for s in sources]
        if split == "train":
            items += [str(Path(p).resolve()) for p in extra_train]
        data[split] = items if len(items) > 1 else items[0]
    data["nc"] = dataset.nc
    data["names"] = dict(dataset.names)
    header = f"# resolved by kitaeru from {dataset.yaml_path}\n"
    return atomic_write_text(target, header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
