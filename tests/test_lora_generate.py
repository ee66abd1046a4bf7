"""The offline tiny pipeline, the size rule, ``kitaeru lora generate`` and the floor-plan API."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from guards import guard, wait_until


@pytest.fixture(scope="session")
def tiny(tiny_sd) -> Path:
    return tiny_sd


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny, shared_data, one_compute_thread) -> Path:
    """A one-epoch adapter on three plain images (captions made on the fly)."""
    from kitaeru.cli import run

    raw = tmp_path_factory.mktemp("raw")
    for path in sorted((shared_data / "floorplans").glob("*.png"))[:3]:
        shutil.copyfile(path, raw / path.name)
    root = tmp_path_factory.mktemp("runs")
    assert run(["lora", "train", "-d", str(raw), "--pretrained-model", str(tiny), "-o", str(root), "--resolution", "32",
                "--epochs", "1", "--validation-every", "0", "--device", "cpu"]) == 0
    return root / "train"


def test_tiny_pipeline_tokenizes_like_clip(tiny):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny / "tokenizer")
    assert len(tokenizer) == 49408
    assert tokenizer("a floor plan").input_ids == [49406, 320, 4125, 2970, 49407]
    assert json.loads((tiny / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"


def test_size_rule_and_prompt():
    from kitaeru.core.errors import ConfigError
    from kitaeru.models.diffusion import floor_plan_prompt, floor_plan_size

    assert floor_plan_size(1, 2) == (80, 160)
    assert floor_plan_size(10, 8) == (800, 640)
    assert floor_plan_size(50, 13) == (1024, 1024)
    assert "10x8 room grid" in floor_plan_prompt(10, 8)
    with pytest.raises(ConfigError):
        floor_plan_size(0, 3)
    with pytest.raises(ConfigError):
        floor_plan_size(3, 51)


def test_dark_images_are_inverted():
    from PIL import Image

    from kitaeru.models.diffusion import invert_if_dark

    dark, inverted = invert_if_dark(Image.new("RGB", (8, 8), (10, 10, 10)))
    assert inverted and dark.getpixel((0, 0)) == (245, 245, 245)
    light, inverted = invert_if_dark(Image.new("RGB", (8, 8), (240, 240, 240)))
    assert not inverted and light.getpixel((0, 0)) == (240, 240, 240)


def test_generate_writes_images_of_the_requested_size(trained, tmp_path, cli):
    from PIL import Image

    out = tmp_path / "out" / "plan.png"
    result = cli("lora", "generate", "--width", "1", "--height", "2", "--lora", trained, "--steps", "2",
                 "--num-images", "2", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["images"] == [str(out), str(out.with_name("plan_2.png"))]
    assert Path(answer["base_model"]).is_dir()  # the base the adapter recorded
    for path in answer["images"]:
        assert Image.open(path).size == (80, 160)
    plain = cli("lora", "generate", "-W", "2", "-H", "1", "--pretrained-model", json.loads(
        (trained / "lora_model" / "adapter_config.json").read_text())["base_model"], "--steps", "1", "--out", tmp_path / "b.png")
    assert plain.exit_code == 0, plain.stderr
    assert Image.open(tmp_path / "b.png").size == (160, 80)


def test_generate_bad_inputs(tmp_path, cli, tiny):
    too_wide = cli("lora", "generate", "--width", "51", "--height", "2", "--pretrained-model", tiny)
    assert too_wide.exit_code == 2 and "width" in too_wide.stderr
    no_lora = cli("lora", "generate", "--lora", tmp_path / "nope", "--pretrained-model", tiny)
    assert no_lora.exit_code == 2 and "not found" in no_lora.stderr
    no_base = cli("lora", "generate", "--width", "2", "--height", "2")
    assert no_base.exit_code == 2 and "--pretrained-model" in no_base.stderr
    assert not list(tmp_path.glob("*.png"))


def test_floor_plan_api(trained, tiny, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from PIL import Image
    import io

    from kitaeru.models.diffusion import load_pipeline
    from kitaeru.serve.floorplan_api import floorplan_router, pipeline_generate_fn

    pipe = load_pipeline(str(tiny), lora=trained, device="cpu")
    real = pipeline_generate_fn(pipe)
    gate = threading.Event()
    hold = {"on": False}

    def generate(width, height, steps, seed):
        if hold["on"]:
            gate.wait(guard())
        return real(width, height, steps, seed)

    router = floorplan_router(generate, tmp_path / "images", max_cells=50, max_steps=8, default_steps=2)
    app = FastAPI()
    app.include_router(router)
    client = TestClient(app)

    answer = client.post("/api/generate-floor-plan", json={"width": 2, "height": 1, "seed": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["imageUrl"].startswith("/api/floor-plans/") and body["seed"] == 5 and body["steps"] == 2
    image = client.get(body["imageUrl"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (160, 80)

    for bad in ({"width": 0, "height": 3}, {"width": 51, "height": 3}, {"width": 3, "height": 3, "steps": 9},
                {"width": 3}, {"width": "wide", "height": 3}):
        assert client.post("/api/generate-floor-plan", json=bad).status_code == 422, bad
    assert client.get("/api/floor-plans/../../etc/passwd").status_code == 404
    assert client.get("/api/floor-plans/0123456789abcdef0123456789abcdef.png").status_code == 404

    hold["on"] = True
    first: dict = {}
    worker = threading.Thread(target=lambda: first.update(r=client.post("/api/generate-floor-plan",
                                                                        json={"width": 1, "height": 1})))
    worker.start()
    wait_until(router.busy, "the first generation held the pipeline", poll_s=0.01)
    busy = client.post("/api/generate-floor-plan", json={"width": 1, "height": 1})
    gate.set()
    worker.join(guard())
    assert busy.status_code == 429
    assert first["r"].status_code == 200
    assert len(list((tmp_path / "images").glob("*.png"))) == 2


def test_serve_lora_mounts_floor_plan_generation(trained, tiny, tmp_path):
    """``kitaeru serve --lora RUN`` (base model read from the adapter): the generation endpoint on the
    real app under uvicorn, and no search backend (its endpoints answer 503)."""
    import httpx

    from kitaeru.recipes.serve import ServeConfig, floorplan_parts
    from kitaeru.serve.app import create_app
    from kitaeru.serve.server import BackgroundServer

    config = ServeConfig(lora=str(trained), generated_dir=str(tmp_path / "plans"), max_steps=4, port=0)
    routers, hooks = floorplan_parts(config, "cpu")
    app = create_app(None, routers=routers, on_startup=hooks)
    with BackgroundServer(app, host="127.0.0.1", port=0) as server, httpx.Client(base_url=server.url, timeout=guard()) as c:
        answer = c.post("/api/generate-floor-plan", json={"width": 3, "height": 2, "steps": 2, "seed": 1})
        assert answer.status_code == 200, answer.text
        assert c.get(answer.json()["imageUrl"]).status_code == 200
        assert len(list((tmp_path / "plans").glob("*.png"))) == 1
        assert c.post("/api/generate-floor-plan", json={"width": 3, "height": 2, "steps": 5}).status_code == 422
        assert c.post("/text", data={"query": "a plan"}).status_code == 503


def test_serve_lora_bad_paths_are_one_line(cli, tmp_path, tiny):
    r = cli("serve", "--lora", tmp_path / "missing", "--pretrained-model", tiny)
    assert r.exit_code == 2 and "--lora" in r.stderr and "not found" in r.stderr
    r = cli("serve", "--pretrained-model", tmp_path / "nope")
    assert r.exit_code == 2 and "not found" in r.stderr
    r = cli("serve")
    assert r.exit_code == 2 and "--lora" in r.stderr


def test_sample_sd_pipeline_command(cli, tmp_path):
    r = cli("sample", "sd-pipeline", "--out", tmp_path / "tiny")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "tiny" / "model_index.json").is_file() and (tmp_path / "tiny" / "unet").is_dir()
    assert r.stdout.strip() == str(tmp_path / "tiny")
