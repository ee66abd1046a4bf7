"""Scene folders: metadata parsing, path safety, captions, time series, image decoding, bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from multimodal_helpers import solid, write_folder

from kitaeru.core.errors import DataError
from kitaeru.data.scenes import decode_images, load_scene_folder, read_timeseries, resample_rows


def _jpeg_bytes(color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    solid(color).save(buf, format="JPEG")
    return buf.getvalue()


def test_reads_captions_paths_and_timeseries(tmp_path):
    root = write_folder(tmp_path / "d", [
        {"scene_id": "a", "description": "one caption", "location": "tokyo", "image_path": "images\\a.jpg",
         "metadata": {"weather": "rain", "time": "night"}},
        {"description": ["first", "二番目の説明", "  "], "image_path": "images/sub/b.png"},
    ], {"images/a.jpg": solid((255, 0, 0)), "images/sub/b.png": solid((0, 255, 0))})
    (root / "timeseries").mkdir()
    np.save(root / "timeseries" / "a.npy", np.ones((5, 3), np.float32))
    scenes = load_scene_folder(root)
    assert [s.scene_id for s in scenes.scenes] == ["a", "b"]  # b: id from the image file's stem
    a, b = scenes.scenes
    assert a.image_path == "images/a.jpg" and a.image.endswith("a.jpg") and a.location == "tokyo"
    assert a.descriptions == ["one caption"] and a.metadata == {"weather": "rain", "time": "night"}
    assert b.descriptions == ["first", "二番目の説明"]  # blank captions dropped
    assert b.record()["descriptions"] == ["first", "二番目の説明"] and b.record()["description"] == "first"
    assert a.timeseries.endswith("a.npy") and b.timeseries is None
    assert load_scene_folder(root, limit=1).scenes[0].scene_id == "a"


def test_missing_image_is_skipped_and_listed(tmp_path):
    root = write_folder(tmp_path / "d", [
        {"scene_id": "a", "description": "x", "image_path": "images/a.jpg"},
        {"scene_id": "gone", "description": "y", "image_path": "images/gone.jpg"},
    ], {"images/a.jpg": solid((1, 2, 3))})
    scenes = load_scene_folder(root)
    assert [s.scene_id for s in scenes.scenes] == ["a"]
    assert scenes.skipped == [{"path": str(root / "images" / "gone.jpg"), "reason": "image file not found"}]


@pytest.mark.parametrize("entries, message", [
    ([{"scene_id": "a", "description": "x"}], "missing 'image_path'"),
    ([{"scene_id": "a", "image_path": "images/a.jpg"}], "missing 'description'"),
    ([{"scene_id": "a", "image_path": "images/a.jpg", "description": 5}], "must be a string or a list of strings"),
    ([{"scene_id": "a", "image_path": "images/a.jpg", "description": ["", " "]}], "'description' is empty"),
    ([{"scene_id": "a", "image_path": "../outside.jpg", "description": "x"}], "escapes the data folder"),
    ([{"scene_id": "a", "image_path": "images\\..\\..\\x.jpg", "description": "x"}], "escapes the data folder"),
    ([{"scene_id": "a", "image_path": "/etc/passwd", "description": "x"}], "is absolute"),
    ([{"scene_id": "a", "image_path": "C:\\data\\a.jpg", "description": "x"}], "is absolute"),
    ([{"scene_id": "a", "image_path": "images/a.jpg", "description": "x"}] * 2, "duplicate scene_id 'a'"),
    ([], "no scenes listed"),
    ({"not": "a list"}, "expected a list of scene entries"),
    (["just a string"], "expected an object"),
])
def test_bad_metadata_is_one_clear_error(tmp_path, entries, message):
    root = write_folder(tmp_path / "d", entries, {"images/a.jpg": solid((1, 2, 3))})
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_scene_folder(root)
    assert "scenes_metadata.json" in str(info.value) and "\n" not in str(info.value)


def test_missing_empty_and_unparsable_folders(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_scene_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="data folder is empty"):
        load_scene_folder(tmp_path / "empty")
    (tmp_path / "nometa").mkdir()
    (tmp_path / "nometa" / "images").mkdir()
    with pytest.raises(DataError, match="no scenes_metadata.json"):
        load_scene_folder(tmp_path / "nometa")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scenes_metadata.json").write_text("[{'scene_id': 1,}]")
    with pytest.raises(DataError, match=r"not valid JSON \(line 1"):
        load_scene_folder(bad)
    nothing = write_folder(tmp_path / "nothing", [{"scene_id": "a", "description": "x", "image_path": "images/a.jpg"}])
    with pytest.raises(DataError, match="none of the listed images exist"):
        load_scene_folder(nothing)


def test_remote_folder_through_fsspec(tmp_path):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/scenes-remote/scenes_metadata.json", json.dumps([{"scene_id": "r", "description": "remote", "image_path": "images/r.jpg"}]).encode())
    fs.pipe("/scenes-remote/images/r.jpg", _jpeg_bytes())
    scenes = load_scene_folder("memory://scenes-remote")
    assert scenes.scenes[0].image == "memory://scenes-remote/images/r.jpg"
    assert decode_images([scenes.scenes[0].image])[0].size == (64, 48)


def test_timeseries_npy_rank_resampling_and_errors(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.stack([np.arange(5.0), np.full(5, np.nan)], axis=1))
    series = read_timeseries(good, steps=9)
    assert series.shape == (9, 2) and series.dtype == np.float32
    assert series[0, 0] == 0 and series[-1, 0] == 4 and series[4, 0] == pytest.approx(2.0)
    assert np.all(series[:, 1] == 0)  # NaN becomes 0
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros(10))
    with pytest.raises(DataError, match=r"wrong.npy: time series must have shape \(T, D\), got 1-D"):
        read_timeseries(wrong, steps=4)
    np.save(wrong, np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match="got 3-D"):
        read_timeseries(wrong, steps=4)
    text = tmp_path / "text.npy"
    np.save(text, np.array([["a", "b"]]))
    with pytest.raises(DataError, match="must be numeric"):
        read_timeseries(text, steps=4)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy")
    with pytest.raises(DataError, match="not a readable .npy array"):
        read_timeseries(junk, steps=4)
    assert resample_rows(np.ones((1, 2)), 3).shape == (3, 2)


def test_decode_images_reports_corrupt_and_truncated(tmp_path):
    good = tmp_path / "good.jpg"
    solid((10, 20, 30), (400, 300)).save(good, quality=95)
    truncated = tmp_path / "trunc.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"this is not a picture")
    out = decode_images([str(good), str(truncated), str(junk)], workers=2, min_side=100)
    assert out[0].size[0] >= 100 and min(out[0].size) >= 100
    assert isinstance(out[1], DataError) and "trunc.jpg: cannot read image" in str(out[1])
    assert isinstance(out[2], DataError) and "junk.jpg" in str(out[2])
