"""Shared builders for the multimodal / scene-data tests: tiny scene folders and nuScenes table sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_folder(root: Path, entries: list[dict[str, Any]], images: dict[str, Image.Image | bytes] | None = None) -> Path:
    """``scenes_metadata.json`` + the given images (relative path → PIL image or raw bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, image in (images or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(image, bytes):
            path.write_bytes(image)
        else:
            image.save(path)
    (root / "scenes_metadata.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return root


def solid(color: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def copy_sample_folder(src: Path, dst: Path, *, count: int | None = None) -> Path:
    """A copy of a generated scene folder (optionally only its first ``count`` scenes)."""
    entries = json.loads((src / "scenes_metadata.json").read_text(encoding="utf-8"))
    if count is not None:
        entries = entries[:count]
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "images").mkdir(exist_ok=True)
    for e in entries:
        shutil.copy2(src / e["image_path"], dst / e["image_path"])
        ts = src / "timeseries" / f"{e['scene_id']}.npy"
        if ts.exists():
            (dst / "timeseries").mkdir(exist_ok=True)
            shutil.copy2(ts, dst / "timeseries" / ts.name)
    (dst / "scenes_metadata.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return dst


def seed_cache(trained_output: Path, new_output: Path) -> None:
    """Copy a trained output's feature cache so a new run on the same data needs no encoder."""
    shutil.copytree(trained_output / "cache", new_output / "cache", dirs_exist_ok=True)


# ---- nuScenes ---------------------------------------------------------------------------------------
CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")


def build_nuscenes(shared_scene: Path, root: Path, *, version: str = "v1.0-mini", extra_scenes: int = 2) -> Path:
    """A complete minimal v1.0 table set (every table the devkit loads) around the real scene-0061.

    Scene-0061 keeps its real tables and CAM_FRONT frame; ``extra_scenes`` more scenes are added whose
    CAM_FRONT frame is one of scene-0061's other real camera images, each with its own log.
    """
    tables_src = shared_scene / "v1.0-test"
    (root / version).mkdir(parents=True)
    shutil.copytree(shared_scene / "samples", root / "samples")

    def load(name: str) -> list[dict]:
        return json.loads((tables_src / f"{name}.json").read_text())

    scene = load("scene")
    sample = load("sample")
    sample_data = load("sample_data")
    sensor = load("sensor")
    calibrated = load("calibrated_sensor")
    ego_pose = load("ego_pose")
    front_sensor = next(s for s in sensor if s["channel"] == "CAM_FRONT")
    front_calib = next(c for c in calibrated if c["sensor_token"] == front_sensor["token"])

    scene[0]["first_sample_token"] = sample[0]["token"]
    scene[0]["last_sample_token"] = sample[0]["token"]
    for s in sample:
        s.update(prev="", next="")
    for sd in sample_data:
        sd.update(prev="", next="")
    logs = [{"token": scene[0]["log_token"], "logfile": "n015-2018-07-24-11-22-45+0800", "vehicle": "n015",
             "date_captured": "2018-07-24", "location": "singapore-onenorth"}]
    other_images = [sd for sd in sample_data if "/CAM_FRONT_LEFT/" in sd["filename"] or "/CAM_FRONT_RIGHT/" in sd["filename"]]
    descriptions = ["Night, rain, wet road, pedestrians at a crosswalk", "Highway, heavy traffic, overtaking a truck"]
    for i in range(extra_scenes):
        n = i + 1
        def tok(kind: str, n: int = n) -> str:
            return f"{kind}-token-{n}"

        source = other_images[i % len(other_images)]
        scene.append({"token": tok("scene"), "log_token": tok("log"), "nbr_samples": 1, "name": f"scene-{1000 + n:04d}",
                      "description": descriptions[i % len(descriptions)], "first_sample_token": tok("sample"),
                      "last_sample_token": tok("sample")})
        sample.append({"token": tok("sample"), "timestamp": source["timestamp"], "scene_token": tok("scene"), "prev": "", "next": ""})
        sample_data.append({**source, "token": tok("sd"), "sample_token": tok("sample"),
                            "calibrated_sensor_token": front_calib["token"], "ego_pose_token": source["ego_pose_token"],
                            "is_key_frame": True, "prev": "", "next": ""})
        logs.append({"token": tok("log"), "logfile": f"log-{n}", "vehicle": "n008", "date_captured": "2018-08-01",
                     "location": "boston-seaport"})
    map_png = root / "maps" / "tiny.png"
    map_png.parent.mkdir()
    Image.new("L", (8, 8), 255).save(map_png)
    tables = {
        "scene": scene, "sample": sample, "sample_data": sample_data, "sensor": sensor, "calibrated_sensor": calibrated,
        "ego_pose": ego_pose, "category": load("category"), "attribute": load("attribute"), "visibility": load("visibility"),
        "log": logs, "instance": [], "sample_annotation": [],
        "map": [{"token": "map0", "log_tokens": [log["token"] for log in logs], "category": "semantic_prior",
                 "filename": "maps/tiny.png"}],
    }
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))
    return root


def write_can_bus(root: Path, scene_name: str, seconds: float = 4.0) -> None:
    """CAN-bus expansion files (pose, vehicle_monitor, steeranglefeedback) for one scene."""
    can = root / "can_bus"
    can.mkdir(exist_ok=True)
    t0 = 1532402927000000
    pose = [{"utime": t0 + int(k * 2e4), "vel": [5.0 + 0.5 * k * 0.02, 0.0, 0.0], "accel": [0.5, 0.1 * np.sin(k / 10), 9.8],
             "rotation_rate": [0.0, 0.0, 0.05], "pos": [0, 0, 0], "orientation": [1, 0, 0, 0]}
            for k in range(int(seconds * 50))]
    monitor = [{"utime": t0 + int(k * 5e5), "vehicle_speed": 18.0 + k, "steering": -20.0 + 2 * k, "throttle": 100, "brake": 0}
               for k in range(int(seconds * 2))]
    steer = [{"utime": t0 + int(k * 1e4), "value": 0.3} for k in range(int(seconds * 100))]
    for message, rows in (("pose", pose), ("vehicle_monitor", monitor), ("steeranglefeedback", steer)):
        (can / f"{scene_name}_{message}.json").write_text(json.dumps(rows))
