"""``kitaeru sample detection``: a YOLO dataset whose labels are exactly what is drawn, on which the
quick-start run learns for real (mAP50 >= 0.5) and ``detect predict`` draws the boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from kitaeru.recipes.detect.sample_detection import CLASSES, write_sample_detection


def _boxes(label_file: Path, size: int) -> list[tuple[int, float, float, float, float]]:
    out = []
    for line in label_file.read_text().split("\n"):
        if line.strip():
            c, x, y, w, h = line.split()
            x, y, w, h = (float(v) * size for v in (x, y, w, h))
            out.append((int(c), x - w / 2, y - h / 2, x + w / 2, y + h / 2))
    return out


def test_labels_are_exactly_the_drawn_objects(tmp_path):
    data_yaml = write_sample_detection(tmp_path / "shapes", train=12, val=4, image_size=160, seed=3)
    config = yaml.safe_load(data_yaml.read_text())
    assert config["names"] == dict(enumerate(CLASSES)) and config["train"] == "images/train"
    images = sorted((tmp_path / "shapes" / "images").rglob("*.jpg"))
    assert len(images) == 16
    classes_seen = set()
    for image in images:
        label = tmp_path / "shapes" / "labels" / image.parent.name / f"{image.stem}.txt"
        boxes = _boxes(label, 160)
        assert 1 <= len(boxes) <= 4
        hsv = np.asarray(Image.open(image).convert("HSV")).astype(int)
        coloured = (hsv[..., 1] > 110) & (hsv[..., 2] > 60)  # the objects carry colour, the background does not
        covered = np.zeros_like(coloured)
        for cls, x0, y0, x1, y1 in boxes:
            classes_seen.add(cls)
            inside = coloured[int(y0):int(np.ceil(y1)) + 1, int(x0):int(np.ceil(x1)) + 1]
            ys, xs = np.nonzero(inside)
            assert len(ys), (image.name, cls)
            # the coloured pixels of the object fill its box to the edges (within JPEG blur)
            assert xs.min() <= 3 and ys.min() <= 3, (image.name, cls)
            assert inside.shape[1] - 1 - xs.max() <= 3 and inside.shape[0] - 1 - ys.max() <= 3, (image.name, cls)
            covered[max(int(y0) - 2, 0):int(np.ceil(y1)) + 3, max(int(x0) - 2, 0):int(np.ceil(x1)) + 3] = True
        assert (coloured & ~covered).sum() < 20, f"{image.name}: a coloured thing outside every label"
    assert classes_seen == set(range(len(CLASSES)))


def test_the_same_seed_gives_the_same_dataset_and_a_used_folder_is_refused(tmp_path, cli):
    first = cli("sample", "detection", "--out", tmp_path / "a", "--train", "3", "--val", "2", "--seed", "5")
    again = cli("sample", "detection", "--out", tmp_path / "a", "--train", "3", "--val", "2", "--seed", "5")
    other = cli("sample", "detection", "--out", tmp_path / "b", "--train", "3", "--val", "2", "--seed", "5")
    assert first.exit_code == again.exit_code == other.exit_code == 0, first.stderr
    assert first.stdout.strip() == str(tmp_path / "a" / "data.yaml")
    a = sorted((tmp_path / "a" / "labels").rglob("*.txt"))
    assert [p.read_text() for p in a] == [(tmp_path / "b" / p.relative_to(tmp_path / "a")).read_text() for p in a]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    refused = cli("sample", "detection", "--out", tmp_path / "mine")
    assert refused.exit_code == 2 and "not empty" in refused.stderr and refused.stderr.count("\n") == 1
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_an_ultralytics_dataset_name_says_it_needs_the_network(cli):
    r = cli("detect", "train", "data=coco8.yaml", "epochs=3", "imgsz=320")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert "coco8.yaml: an Ultralytics dataset name" in r.stderr and "kitaeru sample detection" in r.stderr


@pytest.mark.slow
def test_the_quick_start_learns_and_predict_draws_the_boxes(tmp_path, cli):
    """The README's detect quick start, as written: random-init YOLOv8n reaches mAP50 >= 0.5."""
    data = tmp_path / "data" / "shapes"
    assert cli("sample", "detection", "--out", data).exit_code == 0
    runs = tmp_path / "runs"
    r = cli("detect", "train", "-d", data / "data.yaml", "--cfg-name", "cpu_quickstart", "-o", runs, "--device", "cpu",
            "--no-tensorboard", "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["status"] == "completed" and result["metrics"]["mAP50"] >= 0.5, result["metrics"]
    predicted = cli("detect", "predict", "-m", Path(result["run_dir"]) / "weights" / "best.pt",
                    "-s", data / "images" / "val", "-o", runs, "--json")
    assert predicted.exit_code == 0, predicted.stderr
    answer = json.loads(predicted.stdout)
    assert answer["images"] == 40 and answer["detections"] >= 40, answer["detections"]
    assert len(answer["annotated_images"]) == 40 and set(answer["detections_per_class"]) == set(CLASSES)
