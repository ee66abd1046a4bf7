"""Generated driving scenes whose pictures show what their captions say, for offline demos and tests.

Each scene draws six attributes and renders them into a dash-camera-like picture:

* time of day — day (blue sky, sun), dusk (orange horizon), night (dark sky, stars, street lamps,
  head-light beam, glowing tail lights and windows);
* weather — clear, rain (grey sky, streaks, dark wet road), fog (distance fades to grey), snow
  (white ground, falling flakes);
* road — highway (three lanes, guard rails), city street (buildings, sidewalks, crosswalk, traffic
  light), rural road (fields, trees, hills, one centre line);
* vehicles ahead (0-3 cars with tail lights), pedestrians (0-3 people);
* manoeuvre — straight, turning left / right (the road bends that way, with an arrow on the road or
  a curve sign), stopping (a red light and a stop line ahead, brake lights on).

The captions say exactly that, in English and in Japanese (two captions per image), and the
``(T, 6)`` time series (speed, longitudinal acceleration, steering, yaw rate, lateral acceleration,
brake) follows the manoeuvre, so a model trained on them demonstrably learns: text, picture and
signal agree.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .sample_render import DEFAULT_SIZE, render_scene

GENERATOR_VERSION = 1
TIMES = ("day", "dusk", "night")
WEATHERS = ("clear", "rain", "fog", "snow")
ROADS = ("highway", "urban", "rural")
MANEUVERS = ("straight", "turn_left", "turn_right", "stop")
LOCATIONS = ("boston-seaport", "singapore-onenorth", "singapore-queenstown", "tokyo-shibuya", "tokyo-odaiba")
TIMESERIES_COLUMNS = ("speed_mps", "accel_long_mps2", "steering_rad", "yaw_rate_radps", "accel_lat_mps2", "brake")
DEFAULT_STEPS = 40  # 20 s at 2 Hz

_EN_TIME = {"day": "Daytime", "dusk": "Dusk", "night": "Night"}
_EN_WEATHER = {"clear": "clear sky", "rain": "heavy rain", "fog": "dense fog", "snow": "snowfall"}
_EN_ROAD = {"highway": "a multi-lane highway", "urban": "a city street with buildings", "rural": "a rural country road"}
_EN_COUNT = {1: "One", 2: "Two", 3: "Three"}
_EN_MANEUVER = {
    "straight": "drives straight ahead",
    "turn_left": "turns left",
    "turn_right": "turns right",
    "stop": "stops at a red traffic light",
}
_JA_TIME = {"day": "昼間", "dusk": "夕方", "night": "夜間"}
_JA_WEATHER = {"clear": "晴れ", "rain": "大雨", "fog": "濃霧", "snow": "雪"}
_JA_ROAD = {"highway": "高速道路", "urban": "ビルが並ぶ市街地の道路", "rural": "郊外の田舎道"}
_JA_MANEUVER = {"straight": "直進する", "turn_left": "左折する", "turn_right": "右折する", "stop": "赤信号で停止する"}


@dataclass(frozen=True)
class SceneAttributes:
    """What one generated scene shows."""

    time: str
    weather: str
    road: str
    vehicles: int
    pedestrians: int
    maneuver: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time, "weather": self.weather, "road": self.road, "vehicles": self.vehicles,
            "pedestrians": self.pedestrians, "maneuver": self.maneuver,
        }


def draw_attributes(rng: np.random.Generator) -> SceneAttributes:
    """A random but plausible combination (no pedestrians on a highway)."""
    road = ROADS[rng.integers(len(ROADS))]
    pedestrians = 0 if road == "highway" or rng.random() < 0.45 else int(rng.integers(1, 4))
    return SceneAttributes(
        time=TIMES[rng.integers(len(TIMES))],
        weather=WEATHERS[rng.integers(len(WEATHERS))],
        road=road,
        vehicles=int(rng.integers(0, 4)),
        pedestrians=pedestrians,
        maneuver=MANEUVERS[rng.integers(len(MANEUVERS))],
    )


# ---- captions ------------------------------------------------------------------------------------
def describe_en(a: SceneAttributes) -> str:
    cars = "No other vehicles ahead" if a.vehicles == 0 else f"{_EN_COUNT[a.vehicles]} car{'s' if a.vehicles > 1 else ''} ahead"
    if a.pedestrians == 0:
        people = "no pedestrians"
    else:
        people = f"{_EN_COUNT[a.pedestrians].lower()} pedestrian{'s' if a.pedestrians > 1 else ''} near the road"
    return f"{_EN_TIME[a.time]}, {_EN_WEATHER[a.weather]}, on {_EN_ROAD[a.road]}. {cars}, {people}. The ego vehicle {_EN_MANEUVER[a.maneuver]}."


def describe_ja(a: SceneAttributes) -> str:
    cars = "他の車両なし" if a.vehicles == 0 else f"前方に車が{a.vehicles}台"
    people = "歩行者なし" if a.pedestrians == 0 else f"道路の近くに歩行者が{a.pedestrians}人"
    return f"{_JA_TIME[a.time]}、{_JA_WEATHER[a.weather]}の{_JA_ROAD[a.road]}。{cars}、{people}。自車は{_JA_MANEUVER[a.maneuver]}。"


# ---- time series ---------------------------------------------------------------------------------
def scene_timeseries(a: SceneAttributes, rng: np.random.Generator, steps: int = DEFAULT_STEPS) -> np.ndarray:
    """``(steps, 6)`` float32: speed, longitudinal accel, steering, yaw rate, lateral accel, brake."""
    t = np.linspace(0.0, 1.0, steps)
    dt = 20.0 / max(steps - 1, 1)
    base = {"highway": 27.0, "rural": 17.0, "urban": 11.0}[a.road]
    base *= (0.8 if a.weather != "clear" else 1.0) * (0.9 if a.time == "night" else 1.0) * (1.0 - 0.05 * a.vehicles)
    base *= float(rng.uniform(0.9, 1.1))
    speed = np.full(steps, base)
    steering = np.zeros(steps)
    brake = np.zeros(steps)
    if a.maneuver in ("turn_left", "turn_right"):
        bump = np.exp(-((t - 0.5) ** 2) / (2 * 0.12**2))
        sign = 1.0 if a.maneuver == "turn_left" else -1.0
        steering = sign * float(rng.uniform(0.25, 0.45)) * bump
        speed = base * (1.0 - 0.45 * bump)
    elif a.maneuver == "stop":
        stop_at = float(rng.uniform(0.45, 0.65))
        speed = base * np.clip(1.0 - t / stop_at, 0.0, 1.0)
        brake = (t > 0.05).astype(float) * np.where(speed > 0, 0.6, 1.0)
    speed = np.clip(speed + rng.normal(0, 0.15, steps), 0.0, None)
    steering = steering + rng.normal(0, 0.01, steps)
    accel = np.gradient(speed, dt)
    yaw_rate = speed * np.tan(steering) / 2.7  # bicycle model, 2.7 m wheelbase
    accel_lat = speed * yaw_rate
    return np.stack([speed, accel, steering, yaw_rate, accel_lat, brake], axis=1).astype(np.float32)


# ---- whole sets ------------------------------------------------------------------------------------
def generate_scene(index: int, seed: int, size: tuple[int, int] = DEFAULT_SIZE, steps: int = DEFAULT_STEPS):
    """Scene ``index`` of the set seeded by ``seed``: ``(record, image, time series)``; each scene has
    its own random stream, so a set of N is the first N scenes of any larger set."""
    rng = np.random.default_rng([seed, index])
    attrs = draw_attributes(rng)
    scene_id = f"scene-{index + 1:04d}"
    record = {
        "scene_id": scene_id,
        "description": [describe_en(attrs), describe_ja(attrs)],
        "location": LOCATIONS[int(rng.integers(len(LOCATIONS)))],
        "image_path": f"images/{scene_id}.jpg",
        "metadata": {**attrs.as_dict(), "generated": True},
    }
    return record, render_scene(attrs, rng, size), scene_timeseries(attrs, rng, steps)


def write_sample_scenes(
    out_dir: str | os.PathLike,
    num_scenes: int = 240,
    *,
    seed: int = 0,
    timeseries: bool = True,
    size: tuple[int, int] = DEFAULT_SIZE,
) -> Path:
    """Write a scene folder (``scenes_metadata.json``, ``images/``, ``timeseries/``) of generated scenes.

    A folder already holding the same set (same count, seed, size and generator version) is reused
    as it is, so repeated runs do not rewrite thousands of files. ``scenes_metadata.json`` is written
    last: an interrupted generation leaves no readable, half-complete set behind.
    """
    import io

    from kitaeru.core.console import track
    from kitaeru.core.storage import atomic_write_bytes, atomic_write_json, ensure_writable_dir, read_json

    if num_scenes < 1:
        from kitaeru.core.errors import ConfigError

        raise ConfigError(f"--num-scenes: must be at least 1 (got {num_scenes})")
    created = not Path(out_dir).exists()
    out = ensure_writable_dir(out_dir)
    info = {"generator_version": GENERATOR_VERSION, "num_scenes": num_scenes, "seed": seed,
            "size": list(size), "timeseries": timeseries}
    info_path = out / "sample_info.json"
    if info_path.is_file() and (out / "scenes_metadata.json").is_file():
        try:
            if read_json(info_path) == info:
                return out
        except Exception:  # noqa: BLE001 - an unreadable marker just means: generate again
            pass
    (out / "images").mkdir(exist_ok=True)
    if timeseries:
        (out / "timeseries").mkdir(exist_ok=True)
    records, new_files = [], []
    try:
        for i in track(range(num_scenes), "generating sample scenes", total=num_scenes):
            record, image, series = generate_scene(i, seed, size)
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=90)
            files = [(out / record["image_path"], buf.getvalue())]
            if timeseries:
                npy = io.BytesIO()
                np.save(npy, series)
                files.append((out / "timeseries" / f"{record['scene_id']}.npy", npy.getvalue()))
            for path, data in files:
                if not path.exists():
                    new_files.append(path)
                atomic_write_bytes(path, data)
            records.append(record)
        atomic_write_json(out / "scenes_metadata.json", records)
    except BaseException:
        # A full disk or Ctrl-C: no scene folder without its scenes_metadata.json is left behind
        # (a folder this call made goes; in an existing one, only the files it added).
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for path in new_files:
                path.unlink(missing_ok=True)
        raise
    atomic_write_json(info_path, info)
    return out
