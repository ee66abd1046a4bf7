"""The generated sample scenes: pictures, captions (EN + JA) and time series agree with each other."""

from __future__ import annotations

import json

import numpy as np

from kitaeru.data.scenes import load_scene_folder
from kitaeru.recipes.multimodal.sample_scenes import (
    SceneAttributes,
    describe_en,
    describe_ja,
    generate_scene,
    render_scene,
    scene_timeseries,
    write_sample_scenes,
)


def _render(**overrides) -> np.ndarray:
    attrs = dict(time="day", weather="clear", road="highway", vehicles=0, pedestrians=0, maneuver="straight")
    attrs.update(overrides)
    return np.asarray(render_scene(SceneAttributes(**attrs), np.random.default_rng(3)), dtype=np.float32)


def test_pictures_show_time_weather_and_turning():
    day, night = _render(time="day"), _render(time="night")
    assert night.mean() < 0.5 * day.mean()
    sky = slice(0, 60)
    assert day[sky, :, 2].mean() > day[sky, :, 0].mean() + 30  # a blue daytime sky
    dusk = _render(time="dusk")
    assert dusk[70:88, :, 0].mean() > dusk[70:88, :, 2].mean() + 40  # orange above the horizon
    snow, clear = _render(weather="snow", road="rural"), _render(weather="clear", road="rural")
    assert snow[200:, :60].mean() > clear[200:, :60].mean() + 60  # white ground beside the road
    fog = _render(weather="fog")
    assert fog.std() < 0.6 * clear.std()  # fog flattens contrast
    rain = _render(weather="rain")
    blue = lambda img: (img[:60, :, 2] - img[:60, :, 0]).mean()  # noqa: E731
    assert blue(rain) < 0.5 * blue(clear)  # a grey, overcast sky

    def road_centre(img: np.ndarray) -> float:
        band = img[110:125]  # just below the horizon: where the road has bent
        asphalt = (band.max(axis=2) - band.min(axis=2) < 18) & (band.mean(axis=2) < 110)  # dark grey
        return float(np.nonzero(asphalt)[1].mean())

    left, right = _render(maneuver="turn_left"), _render(maneuver="turn_right")
    assert road_centre(left) < 160 - 15 and road_centre(right) > 160 + 15


def test_pictures_show_vehicles_and_pedestrians():
    empty = _render(road="urban")
    cars = _render(road="urban", vehicles=3)
    people = _render(road="urban", pedestrians=3)
    assert np.abs(cars - empty).mean() > 3 and np.abs(people - empty).mean() > 1
    lit = _render(road="urban", vehicles=2, time="night")
    red = (lit[..., 0] > 200) & (lit[..., 1] < 90)
    assert red.sum() > 20  # glowing tail lights at night


def test_captions_name_every_attribute_in_english_and_japanese():
    a = SceneAttributes("night", "rain", "urban", 2, 1, "turn_left")
    en, ja = describe_en(a), describe_ja(a)
    assert en == ("Night, heavy rain, on a city street with buildings. Two cars ahead, "
                  "one pedestrian near the road. The ego vehicle turns left.")
    for word in ("夜間", "大雨", "市街地", "車が2台", "歩行者が1人", "左折"):
        assert word in ja
    b = SceneAttributes("day", "clear", "highway", 0, 0, "stop")
    assert "No other vehicles ahead, no pedestrians" in describe_en(b) and "赤信号で停止" in describe_ja(b)


def test_timeseries_follow_the_manoeuvre():
    rng = np.random.default_rng(0)
    base = dict(time="day", weather="clear", road="urban", vehicles=0, pedestrians=0)
    left = scene_timeseries(SceneAttributes(**base, maneuver="turn_left"), rng)
    right = scene_timeseries(SceneAttributes(**base, maneuver="turn_right"), rng)
    stop = scene_timeseries(SceneAttributes(**base, maneuver="stop"), rng)
    straight = scene_timeseries(SceneAttributes(**base, maneuver="straight"), rng)
    assert left.shape == (40, 6) and left.dtype == np.float32
    assert left[:, 2].max() > 0.2 and right[:, 2].min() < -0.2  # steering
    assert left[:, 3].max() > 0 and right[:, 3].min() < 0  # yaw rate
    assert abs(straight[:, 2]).max() < 0.1
    assert stop[-1, 0] < 0.5 and stop[:, 5].max() == 1.0 and stop[:, 1].min() < -0.3  # halts, brakes
    highway = scene_timeseries(SceneAttributes("day", "clear", "highway", 0, 0, "straight"), rng)
    assert highway[:, 0].mean() > 1.8 * straight[:, 0].mean()


def test_scenes_are_deterministic_and_prefix_stable():
    r1, im1, ts1 = generate_scene(7, seed=5)
    r2, im2, ts2 = generate_scene(7, seed=5)
    assert r1 == r2 and np.array_equal(np.asarray(im1), np.asarray(im2)) and np.array_equal(ts1, ts2)
    assert generate_scene(7, seed=6)[0] != r1 or not np.array_equal(np.asarray(generate_scene(7, seed=6)[1]), np.asarray(im1))
    meta = r1["metadata"]
    assert r1["description"][0] == describe_en(SceneAttributes(**{k: meta[k] for k in
                                                                  ("time", "weather", "road", "vehicles", "pedestrians", "maneuver")}))


def test_write_sample_scenes_folder_and_reuse(tmp_path):
    out = write_sample_scenes(tmp_path / "s", 6, seed=1)
    scenes = load_scene_folder(out)
    assert len(scenes) == 6 and all(len(s.descriptions) == 2 for s in scenes.scenes)
    assert all(s.timeseries and s.timeseries.endswith(".npy") for s in scenes.scenes)
    first = (out / "images" / "scene-0001.jpg").stat().st_mtime_ns
    write_sample_scenes(tmp_path / "s", 6, seed=1)  # same set: reused, not rewritten
    assert (out / "images" / "scene-0001.jpg").stat().st_mtime_ns == first
    info = json.loads((out / "sample_info.json").read_text())
    assert info["num_scenes"] == 6 and info["seed"] == 1


def test_sample_scenes_command(cli, tmp_path):
    r = cli("sample", "scenes", "--out", tmp_path / "cmd", "--num-scenes", "3", "--no-timeseries")
    assert r.exit_code == 0, r.stderr
    entries = json.loads((tmp_path / "cmd" / "scenes_metadata.json").read_text(encoding="utf-8"))
    assert [e["scene_id"] for e in entries] == ["scene-0001", "scene-0002", "scene-0003"]
    assert not (tmp_path / "cmd" / "timeseries").exists()
    assert cli("sample", "scenes", "--out", tmp_path / "zero", "--num-scenes", "0").exit_code == 2
