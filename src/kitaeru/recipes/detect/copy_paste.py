"""Dynamic copy-paste synthesis: cut-out objects pasted onto background pictures, with YOLO labels.

Objects come from ``annotated_dir/<class name>/`` in either of two forms:

* an image with a mask beside it: ``cup_01.jpg`` + ``cup_01_mask.png`` (or ``cup_01.mask.png``,
  or ``masks/cup_01.png`` in the class folder); the mask is white where the object is;
* a cut-out with transparency: an RGBA ``.png``/``.webp`` whose alpha channel is the mask.

Each synthetic picture takes a random background from ``backgrounds_dir`` and 1–3 objects; each
object is scaled (0.5–1.5 of its size, capped so it fits), rotated (±15°), maybe flipped, colour
matched to the background under it, feathered (alpha edge blur σ 2) and placed where its box
overlaps no earlier box by more than IoU 0.1. The tight box of the visible object is written as a
YOLO label. The number of pictures is ``synthetic:real ratio × real training images``.

The output is cached in a folder named by a hash of the inputs (paths, sizes, modification times)
and every parameter, so a second run with the same inputs reuses it; the same seed gives the same
pictures. Heavy imports (NumPy, PIL) happen inside the functions.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from kitaeru.core.errors import DataError
from kitaeru.recipes.detect.config import CopyPasteParams
from kitaeru.core.storage import IMAGE_EXTENSIONS
from kitaeru.data.images import pil_open

CUTOUT_EXTENSIONS = (".png", ".webp")
MASK_SUFFIXES = ("_mask", ".mask")
MANIFEST = "manifest.json"
# Bumped whenever the synthesis itself changes, so old caches are not reused for new behaviour.
SYNTHESIS_VERSION = 1


@dataclass
class CutOut:
    """One annotated object: where its pixels and mask come from, and its class."""

    class_id: int
    class_name: str
    image: Path
    mask: Path | None  # None: the alpha channel of ``image`` is the mask


@dataclass
class SyntheticSet:
    """What a synthesis produced (or found in its cache)."""

    images_dir: Path
    labels_dir: Path
    count: int
    objects: int
    cache_key: str
    reused: bool
    skipped: list[dict[str, str]] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "images_dir": str(self.images_dir),
            "labels_dir": str(self.labels_dir),
            "count": self.count,
            "objects": self.objects,
            "objects_per_class": dict(self.per_class),
            "cache_key": self.cache_key,
            "reused_cache": self.reused,
            "skipped_inputs": len(self.skipped),
        }


# ---- inputs ------------------------------------------------------------------------------------


def find_cutouts(annotated_dir: str | os.PathLike, class_names: Mapping[int, str] | Sequence[str]) -> tuple[list[CutOut], list[dict[str, str]]]:
    """Objects under ``annotated_dir/<class>/`` and the files that could not be used (with why).

    A class folder whose name is not one of ``class_names`` is a :class:`DataError` (its objects
    would get no label). Images without a mask and without transparency are listed as skipped.
    """
    root = Path(annotated_dir)
    if not root.is_dir():
        raise DataError(f"--annotated-dir {root}: not found or not a folder")
    names = dict(enumerate(class_names)) if not isinstance(class_names, Mapping) else dict(class_names)
    by_name = {str(v): int(k) for k, v in names.items()}
    cutouts: list[CutOut] = []
    skipped: list[dict[str, str]] = []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"--annotated-dir {root}: no class folders (expected {root}/<class name>/...)")
    for class_dir in class_dirs:
        if class_dir.name not in by_name:
            known = ", ".join(list(by_name)[:8]) + (", ..." if len(by_name) > 8 else "")
            raise DataError(f"--annotated-dir {class_dir}: '{class_dir.name}' is not a class of the dataset ({known})")
        class_id = by_name[class_dir.name]
        files = sorted(f for f in class_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        masks_subdir = class_dir / "masks"
        mask_files = {f for f in files if _is_mask_name(f)}
        for image in files:
            if image in mask_files:
                continue
            mask = _mask_for(image, masks_subdir)
            if mask is None and not (image.suffix.lower() in CUTOUT_EXTENSIONS and _has_alpha(image)):
                skipped.append({"path": str(image), "reason": "no mask file and no transparency"})
                continue
            cutouts.append(CutOut(class_id, class_dir.name, image, mask))
    if not cutouts:
        raise DataError(
            f"--annotated-dir {root}: no usable objects (each needs <name>_mask.png beside it or an alpha channel)"
        )
    return cutouts, skipped


def _is_mask_name(path: Path) -> bool:
    return any(path.stem.endswith(s) for s in MASK_SUFFIXES)


def _mask_for(image: Path, masks_subdir: Path) -> Path | None:
    for suffix in MASK_SUFFIXES:
        for ext in (".png", ".jpg", ".bmp"):
            candidate = image.with_name(f"{image.stem}{suffix}{ext}")
            if candidate.is_file():
                return candidate
    if masks_subdir.is_dir():
        for ext in (".png", ".jpg", ".bmp"):
            candidate = masks_subdir / f"{image.stem}{ext}"
            if candidate.is_file():
                return candidate
    return None


def _has_alpha(path: Path) -> bool:
    try:
        with pil_open(path) as img:
            return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    except OSError:
        return False


def find_backgrounds(backgrounds_dir: str | os.PathLike) -> list[Path]:
    root = Path(backgrounds_dir)
    if not root.is_dir():
        raise DataError(f"--backgrounds-dir {root}: not found or not a folder")
    found = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not found:
        raise DataError(f"--backgrounds-dir {root}: no images found")
    return found


def synthetic_count(real_images: int, ratio: float) -> int:
    """How many synthetic images a ``synthetic:real`` ratio asks for."""
    return max(0, int(round(real_images * ratio)))


def cache_key(cutouts: Sequence[CutOut], backgrounds: Sequence[Path], count: int, params: CopyPasteParams) -> str:
    """A hash of every input file (path, size, mtime), the class ids, the count and every parameter."""
    digest = hashlib.sha256()
    digest.update(f"v{SYNTHESIS_VERSION}|{count}|".encode())
    digest.update(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode())
    for c in cutouts:
        digest.update(f"|o|{c.class_id}|{_file_fingerprint(c.image)}|{_file_fingerprint(c.mask) if c.mask else '-'}".encode())
    for b in backgrounds:
        digest.update(f"|b|{_file_fingerprint(b)}".encode())
    return digest.hexdigest()[:16]


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


# ---- synthesis ---------------------------------------------------------------------------------


def synthesize(
    annotated_dir: str | os.PathLike,
    backgrounds_dir: str | os.PathLike,
    class_names: Mapping[int, str] | Sequence[str],
    count: int,
    cache_root: str | os.PathLike,
    params: CopyPasteParams | None = None,
) -> SyntheticSet:
    """Make (or reuse from ``cache_root``) ``count`` synthetic images with YOLO labels.

    The set lives in ``cache_root/<key>/images`` and ``.../labels`` (the layout Ultralytics expects,
    so the images folder can be listed as an extra training source). It is built in a temporary
    folder and renamed into place, so an interrupted synthesis never leaves a half-made cache.
    """
    import shutil
    import tempfile

    params = params or CopyPasteParams()
    cutouts, skipped = find_cutouts(annotated_dir, class_names)
    backgrounds = find_backgrounds(backgrounds_dir)
    key = cache_key(cutouts, backgrounds, count, params)
    cache_root = Path(cache_root)
    target = cache_root / key
    manifest_path = target / MANIFEST
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        return SyntheticSet(
            target / "images", target / "labels", manifest["count"], manifest["objects"], key, True,
            skipped, manifest.get("objects_per_class", {}),
        )
    cache_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=cache_root))
    try:
        images_dir, labels_dir = work / "images", work / "labels"
        images_dir.mkdir()
        labels_dir.mkdir()
        objects, per_class, bad = _render_all(cutouts, backgrounds, count, params, images_dir, labels_dir)
        skipped.extend(bad)
        manifest = {
            "count": count, "objects": objects, "objects_per_class": per_class, "key": key,
            "params": params.model_dump(mode="json"), "synthesis_version": SYNTHESIS_VERSION,
            "sources": {"annotated_dir": str(annotated_dir), "backgrounds_dir": str(backgrounds_dir),
                        "objects": len(cutouts), "backgrounds": len(backgrounds)},
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        try:
            os.replace(work, target)
        except OSError:  # another process finished the same key first: use theirs
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return SyntheticSet(target / "images", target / "labels", count, objects, key, False, skipped, per_class)


def _render_all(
    cutouts: Sequence[CutOut],
    backgrounds: Sequence[Path],
    count: int,
    params: CopyPasteParams,
    images_dir: Path,
    labels_dir: Path,
) -> tuple[int, dict[str, int], list[dict[str, str]]]:
    import numpy as np

    rng = np.random.default_rng(params.seed)
    loaded: dict[Path, Any] = {}
    unreadable: dict[Path, str] = {}
    total_objects = 0
    per_class: dict[str, int] = {}
    for index in range(count):
        background = _load_background(backgrounds[int(rng.integers(len(backgrounds)))], unreadable)
        if background is None:
            background = _first_readable_background(backgrounds, unreadable)
        canvas = background.copy()
        boxes: list[tuple[float, float, float, float]] = []
        lines: list[str] = []
        wanted = int(rng.integers(params.objects_min, params.objects_max + 1))
        for _ in range(wanted):
            cut = cutouts[int(rng.integers(len(cutouts)))]
            rgba = loaded.get(cut.image)
            if rgba is None and cut.image not in unreadable:
                rgba = _load_cutout(cut, unreadable)
                if rgba is not None:
                    loaded[cut.image] = rgba
            if rgba is None:
                continue
            placed = _paste_one(canvas, rgba, boxes, params, rng)
            if placed is None:
                continue
            boxes.append(placed)
            lines.append(_yolo_line(cut.class_id, placed, canvas.size))
            per_class[cut.class_name] = per_class.get(cut.class_name, 0) + 1
        name = f"synthetic_{index:06d}"
        canvas.convert("RGB").save(images_dir / f"{name}.jpg", quality=params.jpeg_quality)
        (labels_dir / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
        total_objects += len(lines)
    skipped = [{"path": str(p), "reason": why} for p, why in unreadable.items()]
    return total_objects, per_class, skipped


def _load_background(path: Path, unreadable: dict[Path, str]):
    from kitaeru.data.images import open_image

    if path in unreadable:
        return None
    try:
        return open_image(path)
    except DataError as exc:
        unreadable[path] = str(exc)
        return None


def _first_readable_background(backgrounds: Sequence[Path], unreadable: dict[Path, str]):
    for path in backgrounds:
        image = _load_background(path, unreadable)
        if image is not None:
            return image
    raise DataError(f"{backgrounds[0].parent}: none of the {len(backgrounds)} background images can be read")


def _load_cutout(cut: CutOut, unreadable: dict[Path, str]):
    """The object as an RGBA image cropped to its mask, or ``None`` (reason kept) when unusable."""
    try:
        with pil_open(cut.image) as img:
            img.load()
            if cut.mask is None:
                rgba = img.convert("RGBA")
            else:
                rgba = img.convert("RGB").convert("RGBA")
                with pil_open(cut.mask) as mask_img:
                    mask = mask_img.convert("L")
                if mask.size != rgba.size:
                    unreadable[cut.image] = f"mask {cut.mask.name} is {mask.size}, image is {rgba.size}"
                    return None
                rgba.putalpha(mask.point(lambda v: 255 if v >= 128 else 0))
    except OSError as exc:
        unreadable[cut.image] = f"cannot read ({exc})"
        return None
    bbox = rgba.getchannel("A").point(lambda v: 255 if v >= 128 else 0).getbbox()
    if bbox is None:
        unreadable[cut.image] = "mask/alpha is empty"
        return None
    return rgba.crop(bbox)


def _paste_one(canvas, rgba, boxes, params: CopyPasteParams, rng):
    """Transform ``rgba`` and paste it on ``canvas`` at a free spot; returns its pixel box or None."""
    import numpy as np
    from PIL import Image, ImageFilter

    bw, bh = canvas.size
    obj = rgba
    scale = float(rng.uniform(params.scale_min, params.scale_max))
    limit = params.max_object_fraction * min(bw, bh)
    longest = max(obj.size) * scale
    if longest > limit:
        scale *= limit / longest
    new_size = (max(2, int(round(obj.size[0] * scale))), max(2, int(round(obj.size[1] * scale))))
    obj = obj.resize(new_size, Image.BILINEAR)
    if rng.random() < params.flip_probability:
        obj = obj.transpose(Image.FLIP_LEFT_RIGHT)
    angle = float(rng.uniform(-params.rotation_degrees, params.rotation_degrees))
    if angle:
        obj = obj.rotate(angle, resample=Image.BILINEAR, expand=True)
    if params.edge_blur_sigma > 0:
        obj.putalpha(obj.getchannel("A").filter(ImageFilter.GaussianBlur(params.edge_blur_sigma)))
    visible = obj.getchannel("A").point(lambda v: 255 if v >= 128 else 0).getbbox()
    if visible is None or obj.size[0] > bw or obj.size[1] > bh:
        return None
    ow, oh = obj.size
    for _ in range(params.placement_attempts):
        x = int(rng.integers(0, bw - ow + 1))
        y = int(rng.integers(0, bh - oh + 1))
        box = (x + visible[0], y + visible[1], x + visible[2], y + visible[3])
        if all(box_iou(box, other) <= params.max_overlap_iou for other in boxes):
            break
    else:
        return None
    region = canvas.crop((x, y, x + ow, y + oh))
    obj = _match_colour(obj, region, params.color_match_strength, np)
    canvas.paste(obj, (x, y), obj)
    return tuple(float(v) for v in box)


def _match_colour(obj, region, strength: float, np):
    """Move the object's per-channel mean and contrast toward the background region under it."""
    from PIL import Image

    if strength <= 0:
        return obj
    arr = np.asarray(obj).astype(np.float32)
    alpha = arr[..., 3] > 127
    if alpha.sum() < 4:
        return obj
    bg = np.asarray(region.convert("RGB")).astype(np.float32).reshape(-1, 3)
    rgb = arr[..., :3]
    src_mean, src_std = rgb[alpha].mean(0), rgb[alpha].std(0) + 1e-3
    dst_mean, dst_std = bg.mean(0), bg.std(0) + 1e-3
    mean = src_mean + strength * (dst_mean - src_mean)
    std = src_std + strength * (dst_std - src_std)
    arr[..., :3] = np.clip((rgb - src_mean) / src_std * std + mean, 0, 255)
    return Image.fromarray(arr.astype(np.uint8), "RGBA")


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _yolo_line(class_id: int, box: Sequence[float], size: tuple[int, int]) -> str:
    w, h = size
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h
    bw, bh = (x2 - x1) / w, (y2 - y1) / h
    return f"{class_id} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}"
