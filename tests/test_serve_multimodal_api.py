"""The search API over a multimodal output (vector_db.json + query encoders), through real uvicorn.

The output is assembled with the multimodal recipe's own pieces, as its export step does: the
built-in sample scenes, the offline MiniLM text encoder and ImageNet MobileNetV2, projectors saved
in the training output format (``query_encoder.json`` + ``*_projector.pt``), and a vector DB made
by encoding every scene with :func:`load_query_encoder`. Two crafted scenes point outside the data
folder. One test runs the real ``kitaeru serve`` command in a subprocess and stops it with Ctrl+C.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from guards import guard
from serve_helpers import LIMIT, running_api

SCENES = 16
EMBED_DIM = 32


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    """A multimodal output folder (untrained projectors: the plumbing, not the quality, is tested here)."""
    import torch

    from kitaeru.data.images import open_image
    from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes
    from kitaeru.data.scenes import load_scene_folder
    from kitaeru.data.vector_db import VectorDB
    from kitaeru.models.projectors import create_projector
    from kitaeru.models.scene_query import encoder_info, load_query_encoder

    root = tmp_path_factory.mktemp("serve_multimodal")
    data, out = root / "data", root / "out"
    write_sample_scenes(data, SCENES, seed=3, timeseries=False, size=(160, 120))
    out.mkdir()
    info = encoder_info(text_encoder="default", image_encoder="torchvision:mobilenet_v2", image_pretrained="default",
                        image_weights=None, image_size=224, image_resize="crop", text_dim=384, image_dim=1280,
                        embed_dim=EMBED_DIM)
    (out / "query_encoder.json").write_text(json.dumps(info))
    torch.manual_seed(0)
    torch.save(create_projector(384, EMBED_DIM).state_dict(), out / "text_projector.pt")
    torch.save(create_projector(1280, EMBED_DIM).state_dict(), out / "image_projector.pt")

    encoder = load_query_encoder(out, "cpu")
    scenes = load_scene_folder(data).scenes
    records = [s.record() for s in scenes]
    text = encoder.encode_text([s.description for s in scenes])
    image = encoder.encode_images([open_image(s.image, min_side=224) for s in scenes])
    secret = root / "secret.jpg"
    shutil.copy(scenes[0].image, secret)
    for name, path in (("escape-dotdot", "../secret.jpg"), ("escape-absolute", str(secret))):
        records.append({"scene_id": name, "description": "crafted", "location": "", "image_path": path, "metadata": {}})
    text = np.concatenate([text, -text[:2]])
    image = np.concatenate([image, -image[:2]])
    VectorDB(scenes=records, text_embeddings=text, image_embeddings=image, description="serve test",
             extra={"data_dir": str(data)}).save(out / "vector_db.json")
    return {"out": out, "data": data, "scenes": scenes, "secret": secret}


@pytest.fixture(scope="module")
def api(output):
    from kitaeru.recipes.serve import ServeConfig, load_backend

    cfg = ServeConfig(output_dir=str(output["out"]))
    with running_api(lambda: load_backend(cfg, "cpu")) as client:
        yield client


def test_health_describes_the_output(api, output):
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["backend"] == "multimodal"
    assert health["items"] == SCENES + 2
    assert health["search_in"] == ["image", "text", "both"]
    assert health["text_queries"] is True and health["dim"] == EMBED_DIM
    assert health["image_encoder"] == "torchvision:mobilenet_v2" and health["text_encoder"] == "default"
    assert health["data_dir"] == output["data"].name
    assert str(output["data"].parent) not in str(health)  # no absolute server paths


def test_text_query_returns_scenes_with_metadata(api, output):
    scene = output["scenes"][5]
    r = api.post("/text", data={"query": scene.description, "search_in": "text"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["top_k"] == 5 and body["search_in"] == "text" and len(body["results"]) == 5
    best = body["results"][0]
    assert best["scene_id"] == scene.scene_id  # its own description embeds to the same vector
    assert best["score"] == pytest.approx(1.0, abs=1e-4)
    assert best["description"] == scene.description and best["location"] == scene.location
    assert best["metadata"]["weather"] == scene.metadata["weather"]
    assert best["image_url"] == f"/image/{best['id']}"
    assert "text_embedding" not in best and "image_embedding" not in best
    default = api.post("/text", data={"query": "night, heavy rain", "top_k": "3"}).json()
    assert default["search_in"] == "image" and len(default["results"]) == 3
    both = api.post("/text", data={"query": "night, heavy rain", "search_in": "both"}).json()["results"]
    assert {h["matched"] for h in both} <= {"image", "text"}
    assert all(a["score"] >= b["score"] for a, b in zip(both, both[1:]))


def test_image_query_finds_its_scene(api, output):
    scene = output["scenes"][7]
    data = Path(scene.image).read_bytes()
    r = api.post("/image", files={"file": ("frame.jpg", data, "image/jpeg")}, data={"top_k": "4"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 4 and results[0]["scene_id"] == scene.scene_id
    assert results[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_bounds_hold_on_this_backend_too(api, output):
    assert api.post("/text", data={"query": "rain", "top_k": "101"}).status_code == 422
    assert api.post("/text", data={"query": "rain", "search_in": "video"}).status_code == 422
    assert api.post("/image", files={"file": ("x.png", b"\x89PNG\r\n\x1a\nnot really")}).status_code == 400
    assert api.post("/image", files={"file": ("big.jpg", b"\0" * (LIMIT + 1))}).status_code == 413


def test_vector_db_is_served_in_the_versioned_shape(api, output):
    r = api.get("/vector_db")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    db = r.json()
    assert db["version"] == "1.0" and db["total_scenes"] == SCENES + 2 == len(db["scenes"])
    assert db["embedding_dim"] == {"text": EMBED_DIM, "image": EMBED_DIM}
    first = db["scenes"][0]
    assert first["scene_id"] == output["scenes"][0].scene_id and len(first["image_embedding"]) == EMBED_DIM
    on_disk = json.loads((output["out"] / "vector_db.json").read_text(encoding="utf-8"))
    assert db["scenes"] == on_disk["scenes"] and db["data_dir"] == output["data"].name
    assert str(output["data"]) not in r.text  # the served folder is named, not located


def test_legacy_flat_vector_db_is_converted(output, tmp_path):
    from kitaeru.data.vector_db import load_vector_db
    from kitaeru.serve.multimodal_backend import MultimodalBackend

    db = load_vector_db(output["out"] / "vector_db.json")
    flat = []
    for scene, t, v in zip(db.scenes[:SCENES], db.text_embeddings, db.image_embeddings):
        flat.append({"vec": t.tolist(), "type": "text", "text": scene["description"], "scene_id": scene["scene_id"],
                     "image_path": scene["image_path"].replace("/", "\\")})
        flat.append({"vec": v.tolist(), "type": "image", "text": scene["description"], "scene_id": scene["scene_id"],
                     "image_path": scene["image_path"].replace("/", "\\")})
    legacy = tmp_path / "legacy"
    shutil.copytree(output["out"], legacy)
    (legacy / "vector_db.json").write_text(json.dumps(flat))
    backend = MultimodalBackend.load(legacy, device="cpu", data_dir=output["data"])
    assert backend.vector_db_file() is None
    converted = json.loads(backend.vector_db())
    assert converted["total_scenes"] == SCENES and "text_embedding" in converted["scenes"][0]
    # Windows separators of the original tool still find the image inside the data folder
    assert backend.image_file("0") == (output["data"] / db.scenes[0]["image_path"]).resolve()


def test_scene_images_are_served_only_from_the_data_folder(api, output):
    scene = output["scenes"][2]
    expected = Path(scene.image).read_bytes()
    by_row = api.get("/image/2")
    assert by_row.status_code == 200 and by_row.headers["content-type"] == "image/jpeg"
    assert by_row.content == expected
    assert api.get(f"/image/{scene.scene_id}").content == expected
    secret = output["secret"].read_bytes()
    for crafted in (str(SCENES), str(SCENES + 1), "escape-dotdot", "escape-absolute"):
        r = api.get(f"/image/{crafted}")
        assert r.status_code == 403, crafted
        assert r.content != secret
    for bad in ("999", "no-such-scene", "..%2Fsecret.jpg", "..%2F..%2F..%2Fetc%2Fpasswd"):
        assert api.get(f"/image/{bad}").status_code == 404, bad


def test_serve_command_end_to_end(output):
    """``kitaeru serve --output-dir`` as a user runs it: real process, real port, Ctrl+C to stop."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KITAERU_NO_PROGRESS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kitaeru", "serve", "--output-dir", str(output["out"]), "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + guard()
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                continue
            found = re.search(r"search API ready on (http://127\.0\.0\.1:\d+)", seen[-1])
            url = found.group(1) if found else None
        assert url, "".join(seen)
        with httpx.Client(base_url=url, timeout=guard()) as client:
            assert client.get("/health").json()["backend"] == "multimodal"
            hits = client.post("/text", data={"query": "snow on a highway", "top_k": "2"}).json()["results"]
            assert len(hits) == 2 and hits[0]["scene_id"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=guard())
    time.sleep(0.2)
    while not lines.empty():
        seen.append(lines.get())
    assert proc.returncode == 0, "".join(seen)  # Ctrl+C is how a server is stopped: not an error
    assert "Application shutdown complete" in "".join(seen)
