"""MCAP time series on the real ROS 2 recording in ../shared/data/mcap."""

from __future__ import annotations

import numpy as np
import pytest

from kitaeru.core.errors import DataError
from kitaeru.data.mcap_series import flatten_numeric, list_topics, read_mcap_series
from kitaeru.data.scenes import read_timeseries


@pytest.fixture(scope="module")
def recording(shared_data):
    return shared_data / "mcap" / "controlled_data_0.mcap"


def test_topics_from_the_summary(recording):
    topics = list_topics(recording)
    assert topics["/BNO055_imu/quaternion"] == {"schema": "capstan/msg/Quaternions", "encoding": "cdr", "messages": 250}
    assert topics["/robot/joint_state"]["messages"] == 250


def test_chosen_topics_on_one_grid(recording):
    series = read_mcap_series(recording, ["/BNO055_imu/quaternion", "/robot/joint_state:position"], steps=50)
    assert series.values.shape == (50, 8 + 14) and series.values.dtype == np.float32
    assert series.columns[0] == "/BNO055_imu/quaternion.quat[0].x"
    assert series.columns[8] == "/robot/joint_state.position[0]"
    assert all(c.startswith("/robot/joint_state.position[") for c in series.columns[8:])
    assert np.all(np.diff(series.times) > 0) and series.topics == ["/BNO055_imu/quaternion", "/robot/joint_state"]
    quat = series.values[:, :4]
    assert np.allclose(np.linalg.norm(quat, axis=1), 1.0, atol=0.05)  # unit quaternions survive interpolation
    assert series.values[:, 8:].std(axis=0).max() > 0  # the joints actually move
    assert np.isfinite(series.values).all()


def test_all_numeric_topics_skip_logs_and_headers(recording):
    series = read_mcap_series(recording, steps=8)
    assert "/rosout" not in series.topics and "/script/script_state" not in series.topics
    assert not any(".header" in c or c.endswith(".seq") for c in series.columns)
    assert series.values.shape == (8, len(series.columns))


def test_missing_topic_and_fields_are_clear_errors(recording, tmp_path):
    with pytest.raises(DataError, match=r"topic '/gps/fix' not in the recording \(topics: /BNO055_imu/cal_state"):
        read_mcap_series(recording, ["/gps/fix"])
    with pytest.raises(DataError, match="has no fields under 'nope'"):
        read_mcap_series(recording, ["/robot/joint_state:nope"])
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap file at all")
    with pytest.raises(DataError, match="junk.mcap: not a readable MCAP file"):
        read_mcap_series(junk, [])


def test_scene_reader_resamples_mcap(recording):
    series = read_timeseries(recording, steps=16, mcap_topics=["/device/estimated_pose"])
    assert series.shape[0] == 16 and series.shape[1] == 3 * 4 + 2


def test_flatten_numeric_on_plain_structures():
    flat = flatten_numeric({"header": {"seq": 1}, "a": 1, "b": [1.5, {"c": 2}], "ok": True, "name": "x", "raw": b"\x00"})
    assert flat == {"a": 1.0, "b[0]": 1.5, "b[1].c": 2.0}
