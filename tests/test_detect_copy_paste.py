"""detect: copy-paste synthesis — labels inside the image, counts by ratio, cache reuse, determinism."""

from __future__ import annotations

import pytest
from detect_helpers import make_backgrounds, make_objects
from PIL import Image

from kitaeru.core.errors import DataError
from kitaeru.recipes.detect.copy_paste import CopyPasteParams, box_iou, find_cutouts, synthesize, synthetic_count

NAMES = {0: "person", 1: "cat", 2: "dog"}


@pytest.fixture
def inputs(tmp_path):
    objects = make_objects(tmp_path / "objects")
    backgrounds = make_backgrounds(tmp_path / "backgrounds")
    return objects, backgrounds


def read_labels(path):
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]


def test_counts_follow_the_ratio():
    assert synthetic_count(4, 2.0) == 8
    assert synthetic_count(3, 0.5) == 2
    assert synthetic_count(10, 0.0) == 0


def test_objects_from_both_forms_and_unusable_files_listed(inputs):
    objects, _ = inputs
    (objects / "cat" / "plain.jpg").write_bytes((objects / "cat" / "cat_01.jpg").read_bytes())
    cutouts, skipped = find_cutouts(objects, NAMES)
    kinds = {(c.class_name, c.mask is None) for c in cutouts}
    assert kinds == {("dog", True), ("cat", False)}  # RGBA cut-out, image + mask
    assert [s["path"].endswith("plain.jpg") for s in skipped] == [True]
    assert "no mask" in skipped[0]["reason"]


def test_unknown_class_folder_and_missing_dirs_are_errors(inputs, tmp_path):
    objects, backgrounds = inputs
    (objects / "unicorn").mkdir()
    with pytest.raises(DataError, match="'unicorn' is not a class"):
        find_cutouts(objects, NAMES)
    (objects / "unicorn").rmdir()
    with pytest.raises(DataError, match="--backgrounds-dir"):
        synthesize(objects, tmp_path / "none", NAMES, 2, tmp_path / "cache")


def test_synthetic_images_have_labels_inside_them_without_overlap(inputs, tmp_path):
    objects, backgrounds = inputs
    params = CopyPasteParams(seed=1)
    made = synthesize(objects, backgrounds, NAMES, 12, tmp_path / "cache", params)
    images = sorted(made.images_dir.glob("*.jpg"))
    labels = sorted(made.labels_dir.glob("*.txt"))
    assert made.count == len(images) == len(labels) == 12 and not made.reused
    total = 0
    for image, label in zip(images, labels):
        assert image.stem == label.stem
        width, height = Image.open(image).size
        assert (width, height) == (160, 120)  # the background's size
        rows = read_labels(label)
        assert len(rows) <= params.objects_max  # fewer than objects_min only when an object found no free spot
        boxes = []
        for cls, cx, cy, w, h in rows:
            assert cls in (1, 2)  # cat, dog
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1  # inside the image
            boxes.append((x1 * width, y1 * height, x2 * width, y2 * height))
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert box_iou(a, b) <= params.max_overlap_iou + 1e-6
        total += len(rows)
    assert total == made.objects == sum(made.per_class.values()) and total >= 12


def test_pasted_pixels_are_where_the_label_says(inputs, tmp_path):
    objects, backgrounds = inputs
    params = CopyPasteParams(seed=2, color_match_strength=0.0, rotation_degrees=0.0, edge_blur_sigma=0.0)
    made = synthesize(objects, backgrounds, {1: "cat", 2: "dog", 0: "person"}, 4, tmp_path / "cache", params)
    import numpy as np

    for image in sorted(made.images_dir.glob("*.jpg")):
        rows = read_labels(made.labels_dir / f"{image.stem}.txt")
        array = np.asarray(Image.open(image).convert("RGB")).astype(int)
        h, w, _ = array.shape
        if not rows:
            continue
        cls, cx, cy, bw, bh = rows[-1]  # pasted last, so nothing covers it (earlier ones may overlap by IoU 0.1)
        centre = array[int(cy * h), int(cx * w)]
        colour = (200, 50, 50) if cls == 2 else (30, 200, 30)
        assert np.abs(centre - colour).max() < 40  # the object's own colour at its box centre


def test_cache_is_reused_and_keyed_by_inputs_and_parameters(inputs, tmp_path):
    objects, backgrounds = inputs
    first = synthesize(objects, backgrounds, NAMES, 5, tmp_path / "cache", CopyPasteParams(seed=0))
    stamp = {p.name: p.stat().st_mtime_ns for p in first.images_dir.iterdir()}
    again = synthesize(objects, backgrounds, NAMES, 5, tmp_path / "cache", CopyPasteParams(seed=0))
    assert again.reused and again.cache_key == first.cache_key
    assert {p.name: p.stat().st_mtime_ns for p in again.images_dir.iterdir()} == stamp  # not rewritten
    other_params = synthesize(objects, backgrounds, NAMES, 5, tmp_path / "cache", CopyPasteParams(seed=0, scale_max=1.2))
    assert not other_params.reused and other_params.cache_key != first.cache_key
    make_backgrounds(backgrounds / "more", count=1)
    other_inputs = synthesize(objects, backgrounds, NAMES, 5, tmp_path / "cache", CopyPasteParams(seed=0))
    assert not other_inputs.reused and other_inputs.cache_key not in (first.cache_key, other_params.cache_key)


def test_same_seed_same_images_other_seed_other_images(inputs, tmp_path):
    objects, backgrounds = inputs
    a = synthesize(objects, backgrounds, NAMES, 4, tmp_path / "a", CopyPasteParams(seed=7))
    b = synthesize(objects, backgrounds, NAMES, 4, tmp_path / "b", CopyPasteParams(seed=7))
    c = synthesize(objects, backgrounds, NAMES, 4, tmp_path / "c", CopyPasteParams(seed=8))

    def content(made):
        return [(p.read_bytes(), (made.labels_dir / f"{p.stem}.txt").read_text()) for p in sorted(made.images_dir.glob("*.jpg"))]

    assert content(a) == content(b)
    assert content(a) != content(c)


def test_parameter_ranges_are_checked():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="scale_min"):
        CopyPasteParams(scale_min=2.0, scale_max=1.0)
    with pytest.raises(ValidationError, match="objects_min"):
        CopyPasteParams(objects_min=4, objects_max=3)
    defaults = CopyPasteParams()
    assert (defaults.scale_min, defaults.scale_max, defaults.rotation_degrees, defaults.objects_min, defaults.objects_max,
            defaults.max_overlap_iou, defaults.edge_blur_sigma) == (0.5, 1.5, 15.0, 1, 3, 0.1, 2.0)
