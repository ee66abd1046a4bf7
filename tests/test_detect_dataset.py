"""detect: data.yaml checks, label checks, the resolved copy, and bad inputs through the real CLI."""

from __future__ import annotations

import pytest
import yaml
from detect_helpers import copy_coco8

from kitaeru.core.errors import DataError
from kitaeru.recipes.detect.data import (
    check_label_text,
    check_labels,
    label_path_for,
    load_data_yaml,
    write_resolved_yaml,
)


@pytest.fixture
def coco8(shared_data, tmp_path):
    return copy_coco8(shared_data, tmp_path)


def test_coco8_loads_with_relative_paths_against_its_folder(coco8, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)  # the YAML's folder, not the working directory, anchors paths
    data = load_data_yaml(coco8)
    assert data.root == coco8.parent and data.nc == 80 and data.names[0] == "person"
    assert data.splits["train"] == [coco8.parent / "images" / "train"]
    summaries = check_labels(data)
    assert (summaries["train"].images, summaries["train"].instances) == (4, 13)
    assert (summaries["val"].images, summaries["val"].instances) == (4, 17)


def test_relative_path_key_is_resolved_against_the_yaml(coco8, tmp_path):
    elsewhere = tmp_path / "configs"
    elsewhere.mkdir()
    moved = elsewhere / "data.yaml"
    raw = yaml.safe_load(coco8.read_text())
    raw["path"] = "../coco8"
    moved.write_text(yaml.safe_dump(raw))
    data = load_data_yaml(moved)
    assert data.root == coco8.parent
    out = write_resolved_yaml(data, tmp_path / "resolved.yaml", extra_train=[tmp_path / "syn" / "images"])
    resolved = yaml.safe_load(out.read_text())
    assert resolved["path"] == str(coco8.parent)
    assert resolved["train"] == [str(coco8.parent / "images" / "train"), str(tmp_path / "syn" / "images")]
    assert resolved["val"] == str(coco8.parent / "images" / "val")
    assert resolved["nc"] == 80 and resolved["names"][79] == "toothbrush" and "download" not in resolved


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "not found"),
        ("train: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("train: images/train\nval: images/val\n", "'names' is missing"),
        ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "without gaps"),
        ("train: images/train\nval: images/val\nnc: 3\nnames: [a, b]\n", "nc is 3"),
        ("train: images/nowhere\nval: images/val\nnames: [a]\n", "images/nowhere not found"),
        ("val: images/val\nnames: [a]\n", "'train' is missing"),
        ("path: ../nowhere\ntrain: images/train\nval: images/val\nnames: [a]\n", "path:"),
    ],
)
def test_bad_data_yaml_is_one_line_error(coco8, content, message):
    target = coco8.parent / "bad.yaml"
    if content is not None:
        target.write_text(content)
    with pytest.raises(DataError) as err:
        load_data_yaml(target)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("0 0.5 0.5 0.2 0.2\n", None),
        ("0 0.1 0.1 0.2 0.1 0.3 0.3\n", None),  # a polygon
        ("", None),
        ("0 0.5 0.5 0.2\n", "4 columns"),
        ("0 0.5 0.5 0.2 0.2 0.1\n", "6 columns"),
        ("80 0.5 0.5 0.2 0.2\n", "class id 80 out of range 0..79"),
        ("-1 0.5 0.5 0.2 0.2\n", "out of range"),
        ("1.5 0.5 0.5 0.2 0.2\n", "not an integer"),
        ("0 1.5 0.5 0.2 0.2\n", "normalised"),
        ("0 0.5 -0.2 0.2 0.2\n", "normalised"),
        ("0 0.5 0.5 0 0.2\n", "positive"),
        ("a b c d e\n", "not numbers"),
    ],
)
def test_label_lines(text, problem):
    _, found = check_label_text(text, nc=80)
    if problem is None:
        assert found is None
    else:
        assert problem in found


def test_bad_labels_are_counted_skips_and_all_bad_is_an_error(coco8):
    labels = coco8.parent / "labels" / "train"
    first, *others = sorted(labels.glob("*.txt"))
    first.write_text("0 0.5 0.5 0.2\n")
    data = load_data_yaml(coco8)
    summary = check_labels(data)["train"]
    assert summary.images == 4 and summary.usable == 3 and len(summary.problems) == 1
    problem = summary.problems[0]
    assert problem.label == str(first) and "4 columns" in problem.reason
    assert problem.as_skip()["path"].endswith(first.stem + ".jpg")
    for other in others:
        other.write_text("99 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match="all 4 images have bad labels"):
        check_labels(load_data_yaml(coco8))


def test_label_path_follows_ultralytics_convention(tmp_path):
    assert label_path_for(tmp_path / "d" / "images" / "train" / "a.jpg") == tmp_path / "d" / "labels" / "train" / "a.txt"


def test_cli_bad_inputs_are_one_line_errors(cli, coco8, tmp_path):
    out = str(tmp_path / "out")
    cases = [
        (["--dataset", str(tmp_path / "missing.yaml")], "not found"),
        (["--dataset", str(coco8), "--epochs", "0"], "epochs"),
        (["--dataset", str(coco8), "--batch", "-3"], "batch"),
        (["--dataset", str(coco8), "--gpu-tier", "huge"], "--gpu-tier"),
        (["--dataset", str(coco8), "--export", "tflite"], "--export"),
        (["--dataset", str(coco8), "--fast", "--cfg-name", "competition"], "--fast"),
        (["--dataset", str(coco8), "--cfg-name", "nope"], "no preset 'nope'"),
        (["--dataset", str(coco8), "--epoch", "3"], "No such option '--epoch'"),
        (["--dataset", str(coco8), "not_an_arg=1"], "unknown Ultralytics argument(s): not_an_arg"),
        (["--dataset", str(coco8), "lr0=abc"], "lr0"),
        (["--dataset", str(coco8), "project=x"], "set by kitaeru"),  # name= is the run's --name
        (["--dataset", str(coco8), "--model", str(tmp_path / "none.pt")], "weights file not found"),
        (["--dataset", str(coco8), "--annotated-dir", str(tmp_path / "no-objects"), "--backgrounds-dir", str(tmp_path)],
         "--annotated-dir"),
        (["--resume", str(tmp_path / "no-run")], "no-run: not found (give latest or a run folder)"),
        ([], "--data-dir is required"),
    ]
    for args, message in cases:
        result = cli("detect", "train", "-o", out, "--no-tensorboard", *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").glob("*/training_result.json"))  # no failure left a half-made run folder
