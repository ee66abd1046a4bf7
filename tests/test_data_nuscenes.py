"""nuScenes as scenes: the built-in table reader, CAN bus, and the optional devkit path, on a minimal
table set built around the real scene-0061 in ../shared/data."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from multimodal_helpers import build_nuscenes, write_can_bus

from kitaeru.core.errors import DataError, MissingExtraError
from kitaeru.recipes.multimodal.nuscenes import CAN_BUS_COLUMNS, find_version, load_nuscenes

HAS_DEVKIT = importlib.util.find_spec("nuscenes") is not None


@pytest.fixture
def nusc_root(shared_data, tmp_path):
    return build_nuscenes(shared_data / "nuscenes-scene-0061", tmp_path / "nuscenes")


def test_builtin_reader_one_entry_per_scene(nusc_root):
    scenes = load_nuscenes(nusc_root)
    assert [s.scene_id for s in scenes.scenes] == ["scene-0061", "scene-1001", "scene-1002"]
    real = scenes.scenes[0]
    assert real.description == "Parked truck, construction, intersection, turn left, following a van"
    assert real.image_path.startswith("samples/CAM_FRONT/") and real.image.endswith(".jpg")
    assert real.location == "singapore-onenorth"
    assert set(real.metadata) == {"scene_token", "scene_name", "sample_token", "nbr_samples", "log_token", "vehicle", "date_captured"}
    assert real.metadata["nbr_samples"] == 39 and real.metadata["vehicle"] == "n015"
    assert scenes.scenes[1].location == "boston-seaport"
    assert "CAM_FRONT_" in scenes.scenes[1].image_path  # the extra scenes reuse the real side cameras
    assert len(load_nuscenes(nusc_root, limit=2)) == 2


def test_builtin_reader_on_the_trimmed_real_tables(shared_data):
    # The shipped tables lack log, map and first_sample_token: the built-in reader still works.
    scenes = load_nuscenes(shared_data / "nuscenes-scene-0061")
    assert len(scenes) == 1 and scenes.scenes[0].location == "" and "/CAM_FRONT/" in scenes.scenes[0].image_path


def test_missing_image_is_skipped(nusc_root):
    for f in (nusc_root / "samples" / "CAM_FRONT_LEFT").iterdir():
        f.unlink()
    scenes = load_nuscenes(nusc_root)
    assert [s.scene_id for s in scenes.scenes] == ["scene-0061", "scene-1002"]
    assert scenes.skipped[0]["reason"] == "image file not found"


def test_version_folder_and_table_errors(nusc_root, tmp_path):
    assert find_version(nusc_root, None) == "v1.0-mini"
    with pytest.raises(DataError, match="v1.0-trainval: nuScenes table folder not found"):
        load_nuscenes(nusc_root, version="v1.0-trainval")
    with pytest.raises(DataError, match="nuScenes folder not found"):
        load_nuscenes(tmp_path / "absent")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="no nuScenes table folder"):
        load_nuscenes(tmp_path / "plain")
    (nusc_root / "v1.0-mini" / "sample.json").unlink()
    with pytest.raises(DataError, match="sample.json: nuScenes table missing"):
        load_nuscenes(nusc_root)


def test_can_bus_becomes_a_time_series(nusc_root):
    write_can_bus(nusc_root, "scene-0061")
    scenes = load_nuscenes(nusc_root, include_timeseries=True, steps=20)
    series = scenes.scenes[0].series
    assert series.shape == (20, len(CAN_BUS_COLUMNS)) == (20, 9)
    speed = series[:, CAN_BUS_COLUMNS.index("vehicle_monitor.vehicle_speed")]
    assert speed[0] == pytest.approx(18.0) and speed[-1] == pytest.approx(25.0) and np.all(np.diff(speed) >= 0)
    assert np.allclose(series[:, CAN_BUS_COLUMNS.index("steeranglefeedback.value")], 0.3)
    assert scenes.scenes[1].series is None  # no CAN bus files for this scene


def test_use_devkit_without_the_package_names_the_extra(nusc_root, monkeypatch):
    if HAS_DEVKIT:
        pytest.skip("nuscenes-devkit is installed here")
    with pytest.raises(MissingExtraError, match=r"pip install 'kitaeru\[devkit\]'"):
        load_nuscenes(nusc_root, use_devkit=True)


def test_cli_use_devkit_without_the_package_exits_2(cli, nusc_root, tmp_path):
    if HAS_DEVKIT:
        pytest.skip("nuscenes-devkit is installed here")
    r = cli("multimodal", "train", "--nuscenes-path", nusc_root, "--use-devkit", "--output-dir", tmp_path / "out")
    assert r.exit_code == 2 and "nuscenes is not installed" in r.stderr and "pip install" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out" / "vector_db.json").exists()


@pytest.mark.skipif(not HAS_DEVKIT, reason="nuscenes-devkit is not installed (extra [devkit]; it pins numpy<2)")
def test_devkit_reader_matches_builtin(nusc_root):
    via_devkit = load_nuscenes(nusc_root, use_devkit=True)
    builtin = load_nuscenes(nusc_root)
    assert [s.record() for s in via_devkit.scenes] == [s.record() for s in builtin.scenes]


@pytest.mark.skipif(not HAS_DEVKIT, reason="nuscenes-devkit is not installed (extra [devkit]; it pins numpy<2)")
def test_devkit_training_through_the_cli(cli, nusc_root, tmp_path):
    r = cli("multimodal", "train", "--nuscenes-path", nusc_root, "--use-devkit", "--epochs", "1", "--val-fraction", "0.34",
            "--output-dir", tmp_path / "out")
    assert r.exit_code == 0, r.stderr
    db = json.loads((tmp_path / "out" / "vector_db.json").read_text())
    assert db["total_scenes"] == 3 and db["scenes"][0]["location"] == "singapore-onenorth"
