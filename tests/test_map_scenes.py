"""``kitaeru map --output-dir``: one point per scene of a multimodal output's vector_db.json.

The scenes are the built-in sample scenes (real rendered JPEGs for the thumbnails); the vector DB
is written with the multimodal recipe's own VectorDB class, its image-side vectors clustered by the
scenes' weather so the map's colouring can be checked against the geometry.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

SCENES = 30


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes
    from kitaeru.data.scenes import load_scene_folder
    from kitaeru.data.vector_db import VectorDB

    root = tmp_path_factory.mktemp("map_scenes")
    data, out = root / "data", root / "out"
    write_sample_scenes(data, SCENES, seed=5, timeseries=False, size=(160, 120))
    scenes = load_scene_folder(data).scenes
    weathers = sorted({s.metadata["weather"] for s in scenes})
    rng = np.random.default_rng(1)
    centres = {w: rng.normal(size=24) * 5 for w in weathers}
    image = np.stack([centres[s.metadata["weather"]] + rng.normal(size=24) for s in scenes]).astype(np.float32)
    text = rng.normal(size=(len(scenes), 24)).astype(np.float32)
    out.mkdir()
    db = VectorDB(scenes=[s.record() for s in scenes], text_embeddings=text, image_embeddings=image,
                  extra={"data_dir": str(data)})
    db.save(out / "vector_db.json")
    return {"root": root, "out": out, "data": data, "scenes": scenes, "db": db}


@pytest.fixture(scope="module")
def scene_map(output):
    from kitaeru.cli import run

    files = {"png": output["root"] / "scenes.png", "html": output["root"] / "scenes.html",
             "json": output["root"] / "scenes.json"}
    assert run(["map", "--output-dir", str(output["out"]), "--out", str(files["png"]), "--html", str(files["html"]),
                "--json-out", str(files["json"]), "--color-by", "weather"]) == 0
    return files


def test_scene_map_json_and_colours(scene_map, output):
    doc = json.loads(scene_map["json"].read_text(encoding="utf-8"))
    scenes = output["scenes"]
    assert doc["n_points"] == len(doc["points"]) == SCENES and doc["modality"] == "image"
    assert [p["id"] for p in doc["points"]] == [s.scene_id for s in scenes]
    assert doc["points"][0]["label"] == f"{scenes[0].scene_id}: {scenes[0].description}"
    assert [p["color"] for p in doc["points"]] == [s.metadata["weather"] for s in scenes]
    xy = np.array([[p["x"], p["y"]] for p in doc["points"]])
    weather = np.array([s.metadata["weather"] for s in scenes])
    groups = sorted(set(weather))
    centres = np.stack([xy[weather == w].mean(axis=0) for w in groups])
    nearest = np.array(groups)[np.argmin(((xy[:, None] - centres[None]) ** 2).sum(-1), axis=1)]
    assert (nearest == weather).mean() >= 0.9


def test_scene_map_png_and_html(scene_map, output):
    assert scene_map["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = scene_map["html"].read_text(encoding="utf-8")
    page = page.replace("\\u002f", "/").replace("\\u003c", "<").replace("\\u003e", ">")
    assert "Plotly.newPlot" in page
    scene = output["scenes"][3]
    assert f"<b>{scene.scene_id}: {scene.description}</b>" in page
    assert f"location: {scene.location}" in page and f"weather: {scene.metadata['weather']}" in page
    assert page.count("data:image/jpeg;base64,") == SCENES  # thumbnails read from the recorded data folder


def test_text_modality_and_legacy_flat_db(cli, output, tmp_path):
    text_json = tmp_path / "text.json"
    r = cli("map", "--output-dir", output["out"], "--modality", "text", "--out", tmp_path / "t.png", "--json-out", text_json)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(text_json.read_text())
    assert doc["modality"] == "text" and doc["n_points"] == SCENES
    # the flat list of the original tool (two items per scene, Windows separators), data folder given
    db = output["db"]
    flat = []
    for scene, t, v in zip(db.scenes, db.text_embeddings, db.image_embeddings):
        for kind, vec in (("text", t), ("image", v)):
            flat.append({"vec": vec.tolist(), "type": kind, "text": scene["description"], "scene_id": scene["scene_id"],
                         "image_path": scene["image_path"].replace("/", "\\")})
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "vector_db.json").write_text(json.dumps(flat), encoding="utf-8")
    html = tmp_path / "legacy.html"
    r = cli("map", "--output-dir", legacy, "--data-dir", output["data"], "--out", tmp_path / "l.png", "--html", html,
            "--sample", "12", "--thumbnails", "5", "--plotly-js", "cdn")
    assert r.exit_code == 0, r.stderr
    page = html.read_text(encoding="utf-8")
    assert page.count("data:image\\u002fjpeg;base64,") == 5
    assert "cdn.plot.ly" in page and len(page) < 1_000_000  # plotly.js not embedded


def test_missing_or_broken_vector_db(cli, tmp_path):
    r = cli("map", "--output-dir", tmp_path, "--out", tmp_path / "m.png")
    assert r.exit_code == 2 and "vector_db.json: not found" in r.stderr
    (tmp_path / "vector_db.json").write_text("{not json")
    r = cli("map", "--output-dir", tmp_path, "--out", tmp_path / "m.png")
    assert r.exit_code == 2 and "not valid JSON" in r.stderr
    (tmp_path / "vector_db.json").write_text(json.dumps({"scenes": []}))
    r = cli("map", "--output-dir", tmp_path, "--out", tmp_path / "m.png")
    assert r.exit_code == 2 and "no scenes" in r.stderr
