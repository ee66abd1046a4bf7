"""``kitaeru multimodal evaluate`` and ``search``, and the query encoder other code (the server) uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from kitaeru.cli import run
from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return write_sample_scenes(tmp_path_factory.mktemp("scenes") / "scenes", 30, seed=11)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    # the same generator with another seed: new scenes the model has never seen
    return write_sample_scenes(tmp_path_factory.mktemp("held") / "held", 12, seed=99)


@pytest.fixture(scope="module")
def trained(scene_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "out"
    args = ["multimodal", "train", "--data-dir", str(scene_dir), "--output-dir", str(out), "--epochs", "8",
            "--batch-size", "8", "--learning-rate", "0.003", "--embed-dim", "48", "--val-fraction", "0.3"]
    assert run(args) == 0
    return out


@pytest.mark.slow  # uses the module's one training run
def test_query_encoder_lands_in_the_vector_db_space(trained, scene_dir):
    from kitaeru.data.vector_db import load_vector_db
    from kitaeru.models.scene_query import load_query_encoder

    encoder = load_query_encoder(trained)
    db = load_vector_db(trained / "vector_db.json")
    first = db.scenes[0]
    image = Image.open(scene_dir / first["image_path"])
    vec = encoder.encode_images([image])
    assert vec.shape == (1, 48) and vec.dtype == np.float32
    assert float(vec[0] @ db.image_embeddings[0]) == pytest.approx(1.0, abs=1e-3)  # same pipeline as training
    texts = encoder.encode_text([first["description"], "夜間、大雨の市街地"])
    assert texts.shape == (2, 48) and np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert encoder.encode_text([]).shape == (0, 48)


@pytest.mark.slow  # uses the module's one training run
def test_evaluate_json_on_a_held_out_folder(cli, trained, held_out):
    r = cli("multimodal", "evaluate", "--output-dir", trained, "--data-dir", held_out, "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result["text_to_image"]) == {"R@1", "R@5", "R@10"} and set(result["image_to_text"]) == {"R@1", "R@5", "R@10"}
    assert result["scenes"] == 12 and result["captions"] == 24
    assert result["text_to_image"]["R@10"] >= result["text_to_image"]["R@5"] >= result["text_to_image"]["R@1"]
    assert result["text_to_image"]["R@5"] > 5 / 12  # better than chance on scenes it never saw


@pytest.mark.slow  # uses the module's one training run
def test_evaluate_table_and_errors(cli, trained, held_out, tmp_path):
    r = cli("multimodal", "evaluate", "--output-dir", trained, "--data-dir", held_out, "--limit", "6")
    assert r.exit_code == 0 and "text→image" in r.stdout and "R@5" in r.stdout and "6 scenes" in r.stdout
    r = cli("multimodal", "evaluate", "--output-dir", tmp_path, "--data-dir", held_out)
    assert r.exit_code == 2 and "no trained projectors" in r.stderr
    r = cli("multimodal", "evaluate", "--output-dir", trained, "--data-dir", tmp_path / "none")
    assert r.exit_code == 2 and "data folder not found" in r.stderr


@pytest.mark.slow  # uses the module's one training run
def test_search_by_text_and_image(cli, trained, scene_dir):
    r = cli("multimodal", "search", "--output-dir", trained, "--text", "Night, heavy rain, on a city street with buildings",
            "--top-k", "3", "--json")
    assert r.exit_code == 0, r.stderr
    hits = json.loads(r.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert {"scene_id", "score", "description", "image_path"} <= set(hits[0])
    entries = json.loads((scene_dir / "scenes_metadata.json").read_text(encoding="utf-8"))
    target = entries[5]
    r = cli("multimodal", "search", "--output-dir", trained, "--image", scene_dir / target["image_path"], "--json")
    hits = json.loads(r.stdout)
    assert len(hits) == 5 and hits[0]["scene_id"] == target["scene_id"] and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    r = cli("multimodal", "search", "--output-dir", trained, "--text", "snowy highway at night")
    assert r.exit_code == 0 and "scene_id" in r.stdout and "scene-" in r.stdout


@pytest.mark.slow  # uses the module's one training run
@pytest.mark.parametrize("args, message", [
    ([], "exactly one of --text or --image"),
    (["--text", "a", "--image", "b.jpg"], "exactly one of --text or --image"),
    (["--text", "rain", "--top-k", "0"], "--top-k"),
    (["--text", "  "], "the query is empty"),
    (["--image", "/no/such/picture.jpg"], "image not found"),
])
def test_search_bad_input(cli, trained, args, message):
    r = cli("multimodal", "search", "--output-dir", trained, *args)
    assert r.exit_code == 2 and message in r.stderr


def test_search_needs_a_trained_output(cli, tmp_path):
    r = cli("multimodal", "search", "--output-dir", tmp_path, "--text", "rain")
    assert r.exit_code == 2 and "no trained projectors" in r.stderr
