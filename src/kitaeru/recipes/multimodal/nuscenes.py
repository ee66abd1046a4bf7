"""nuScenes as scenes: one entry per scene (first sample's CAM_FRONT, ``scene.description``,
location from the log), optionally with the CAN-bus expansion as a time series.

Two ways to read the v1.0 tables:

* the built-in reader (default) parses the JSON tables it needs (``scene``, ``sample``,
  ``sample_data``, and ``log``/``sensor``/``calibrated_sensor`` when present). It needs no extra
  package and works on trimmed table sets;
* ``use_devkit=True`` goes through ``nuscenes-devkit`` (extra ``[devkit]``), which validates the
  full table set. The devkit pins ``numpy<2`` and pulls ``opencv-python-headless``, which clash with
  the core stack, so it is imported only here and only when asked for.

CAN bus (``<root>/can_bus/<scene>_<message>.json`` or ``<root>/../can_bus``): nine signals per
scene on one time grid — ego speed, longitudinal and lateral acceleration and yaw rate from
``pose``; wheel speed, steering, throttle and brake from ``vehicle_monitor``; the steering angle
from ``steeranglefeedback``. A message file a scene lacks leaves its columns at zero.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from kitaeru.core.errors import DataError, require
from kitaeru.data.scenes import Scene, SceneSet, check_inside, resample_rows

CAMERA = "CAM_FRONT"
VERSION_PREFERENCE = ("v1.0-mini", "v1.0-trainval", "v1.0-test")
# (message, field, index into a vector field or None) — the order of the time-series columns.
CAN_BUS_SIGNALS: tuple[tuple[str, str, int | None], ...] = (
    ("pose", "vel", 0),
    ("pose", "accel", 0),
    ("pose", "accel", 1),
    ("pose", "rotation_rate", 2),
    ("vehicle_monitor", "vehicle_speed", None),
    ("vehicle_monitor", "steering", None),
    ("vehicle_monitor", "throttle", None),
    ("vehicle_monitor", "brake", None),
    ("steeranglefeedback", "value", None),
)
CAN_BUS_COLUMNS = [f"{m}.{f}" + (f"[{i}]" if i is not None else "") for m, f, i in CAN_BUS_SIGNALS]


def find_version(root: Path, version: str | None) -> str:
    """The table folder to read: ``version`` if given, else the only (or preferred) ``v1.0-*`` folder."""
    if not root.is_dir():
        raise DataError(f"{root}: nuScenes folder not found")
    if version:
        if not (root / version).is_dir():
            raise DataError(f"{root / version}: nuScenes table folder not found")
        return version
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("v1.0"))
    if not found:
        raise DataError(f"{root}: no nuScenes table folder (expected v1.0-mini/, v1.0-trainval/ ...)")
    for preferred in VERSION_PREFERENCE:
        if preferred in found:
            return preferred
    return found[0]


def _table(folder: Path, name: str, required: bool = True) -> list[dict]:
    path = folder / f"{name}.json"
    if not path.is_file():
        if required:
            raise DataError(f"{path}: nuScenes table missing")
        return []
    from kitaeru.core.storage import read_json

    table = read_json(path)
    if not isinstance(table, list):
        raise DataError(f"{path}: expected a list of records, got {type(table).__name__}")
    return table


def load_nuscenes(
    root: str | os.PathLike,
    *,
    version: str | None = None,
    limit: int | None = None,
    use_devkit: bool = False,
    include_timeseries: bool = False,
    steps: int = 64,
) -> SceneSet:
    """Scenes of a nuScenes root (see the module docstring). ``limit`` keeps the first N scenes."""
    root = Path(root)
    version = find_version(root, version)
    reader = _devkit_entries if use_devkit else _builtin_entries
    entries, skipped = reader(root, version)
    if limit is not None:
        entries = entries[:limit]
    can_root = _can_bus_root(root) if include_timeseries else None
    scenes: list[Scene] = []
    for entry in entries:
        image = root / entry["filename"]
        if not image.is_file():
            skipped.append({"path": str(image), "reason": "image file not found"})
            continue
        check_inside(str(root), str(image), f"{root / version}: scene {entry['name']}")  # no '..' or link out
        scene = Scene(
            scene_id=entry["name"], descriptions=[entry["description"] or entry["name"]], image=str(image),
            image_path=entry["filename"], location=entry["location"], metadata=entry["metadata"],
        )
        if can_root is not None:
            scene.series = can_bus_series(can_root, entry["name"], steps=steps)
        scenes.append(scene)
    if not scenes:
        raise DataError(f"{root / version}: no usable scene (every scene lacked a {CAMERA} image)")
    return SceneSet(scenes=scenes, skipped=skipped, source=str(root))


# ---- built-in reader -------------------------------------------------------------------------------
def _builtin_entries(root: Path, version: str) -> tuple[list[dict], list[dict[str, str]]]:
    folder = root / version
    scenes = _table(folder, "scene")
    samples = _table(folder, "sample")
    sample_data = _table(folder, "sample_data")
    logs = {r.get("token"): r for r in _table(folder, "log", required=False)}
    sensors = {r.get("token"): r for r in _table(folder, "sensor", required=False)}
    calibrated = {r.get("token"): r for r in _table(folder, "calibrated_sensor", required=False)}

    def channel(record: dict) -> str:
        sensor = sensors.get(calibrated.get(record.get("calibrated_sensor_token"), {}).get("sensor_token"), {})
        if sensor.get("channel"):
            return sensor["channel"]
        parts = str(record.get("filename", "")).split("/")  # samples/CAM_FRONT/<file>
        return parts[1] if len(parts) > 2 else ""

    samples_by_token = {s.get("token"): s for s in samples}
    first_by_scene: dict[str, dict] = {}
    for s in samples:
        current = first_by_scene.get(s.get("scene_token"))
        if current is None or s.get("timestamp", 0) < current.get("timestamp", 0):
            first_by_scene[s.get("scene_token")] = s
    front_by_sample: dict[str, dict] = {}
    for record in sample_data:
        if record.get("is_key_frame", True) and channel(record) == CAMERA:
            front_by_sample[record.get("sample_token")] = record

    entries: list[dict] = []
    skipped: list[dict[str, str]] = []
    for scene in sorted(scenes, key=lambda s: str(s.get("name", ""))):
        name = str(scene.get("name") or scene.get("token"))
        first = samples_by_token.get(scene.get("first_sample_token")) or first_by_scene.get(scene.get("token"))
        if first is None:
            skipped.append({"path": name, "reason": "scene has no samples"})
            continue
        front = front_by_sample.get(first.get("token"))
        if front is None or not front.get("filename"):
            skipped.append({"path": name, "reason": f"first sample has no {CAMERA} image"})
            continue
        log = logs.get(scene.get("log_token"), {})
        entries.append(_entry(scene, first, front, log))
    return entries, skipped


def _entry(scene: dict, sample: dict, front: dict, log: dict) -> dict[str, Any]:
    name = str(scene.get("name") or scene.get("token"))
    return {
        "name": name,
        "description": str(scene.get("description") or ""),
        "filename": str(front["filename"]).replace("\\", "/"),
        "location": str(log.get("location") or ""),
        "metadata": {
            "scene_token": scene.get("token"),
            "scene_name": name,
            "sample_token": sample.get("token"),
            "nbr_samples": scene.get("nbr_samples"),
            "log_token": scene.get("log_token"),
            "vehicle": log.get("vehicle"),
            "date_captured": log.get("date_captured"),
        },
    }


# ---- devkit reader -------------------------------------------------------------------------------------
def _devkit_entries(root: Path, version: str) -> tuple[list[dict], list[dict[str, str]]]:
    module = require("nuscenes.nuscenes", "devkit", "needed by --use-devkit")
    try:
        nusc = module.NuScenes(version=version, dataroot=str(root), verbose=False)
    except Exception as exc:  # noqa: BLE001 - the devkit reports bad tables with asserts, KeyErrors, ...
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DataError(f"{root / version}: nuscenes-devkit cannot load the tables ({type(exc).__name__}: {reason})") from exc
    entries: list[dict] = []
    skipped: list[dict[str, str]] = []
    for scene in sorted(nusc.scene, key=lambda s: s["name"]):
        sample = nusc.get("sample", scene["first_sample_token"])
        token = sample["data"].get(CAMERA)
        if token is None:
            skipped.append({"path": scene["name"], "reason": f"first sample has no {CAMERA} image"})
            continue
        entries.append(_entry(scene, sample, nusc.get("sample_data", token), nusc.get("log", scene["log_token"])))
    return entries, skipped


# ---- CAN bus ---------------------------------------------------------------------------------------------
def _can_bus_root(root: Path) -> Path | None:
    for candidate in (root / "can_bus", root.parent / "can_bus"):
        if candidate.is_dir():
            return candidate
    return None


def _read_can_message(can_root: Path, scene_name: str, message: str) -> list[dict] | None:
    path = can_root / f"{scene_name}_{message}.json"
    if not path.is_file():
        return None
    from kitaeru.core.storage import read_json

    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of CAN bus messages")
    return data


def can_bus_series(
    can_root: Path,
    scene_name: str,
    *,
    steps: int = 64,
    read: Callable[[Path, str, str], list[dict] | None] = _read_can_message,
) -> np.ndarray | None:
    """The scene's CAN-bus signals (:data:`CAN_BUS_COLUMNS`) on ``steps`` instants, or ``None``
    when the expansion has no file for the scene."""
    messages = {m: read(can_root, scene_name, m) for m in {m for m, _, _ in CAN_BUS_SIGNALS}}
    present = {m: rows for m, rows in messages.items() if rows}
    if not present:
        return None
    times = [float(r["utime"]) for rows in present.values() for r in rows if "utime" in r]
    if not times:
        raise DataError(f"{can_root}: {scene_name} CAN bus messages have no 'utime'")
    grid = np.linspace(min(times), max(times), steps)
    columns = []
    for message, name, index in CAN_BUS_SIGNALS:
        rows = present.get(message)
        if not rows:
            columns.append(np.zeros(steps))
            continue
        t = np.array([float(r.get("utime", np.nan)) for r in rows])
        v = np.array([_signal(r.get(name), index) for r in rows])
        ok = np.isfinite(t) & np.isfinite(v)
        columns.append(np.interp(grid, t[ok], v[ok]) if ok.any() else np.zeros(steps))
    return resample_rows(np.stack(columns, axis=1), steps)


def _signal(value: Any, index: int | None) -> float:
    try:
        if index is not None:
            value = value[index]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return float("nan")
