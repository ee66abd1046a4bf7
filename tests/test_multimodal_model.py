"""The loss, the retrieval metrics, the projectors and the vector DB file format."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kitaeru.core.errors import DataError
from kitaeru.data.vector_db import VectorDB, load_vector_db
from kitaeru.models.projectors import LogitScale, TimeSeriesEncoder, create_projector, multi_positive_clip_loss
from kitaeru.recipes.multimodal.model import FeatureTensors, SceneSearchModel, retrieval_recall


def test_captions_of_one_image_are_positives_not_negatives():
    scene = torch.eye(3)
    text = torch.stack([scene[0], scene[0], scene[1], scene[2]])  # two captions of image 0
    owner = torch.tensor([0, 0, 1, 2])
    scale = torch.tensor(100.0)
    loss = multi_positive_clip_loss(text, scene, owner, scale)
    assert float(loss) < 1e-3  # perfectly aligned: no penalty although image 0 has two captions
    # A plain CLIP loss over (caption, image) rows would treat the twin caption as a negative:
    logits = scale * text @ scene.t()
    naive_i2t = torch.nn.functional.cross_entropy(logits.t()[[0, 0, 1, 2]], torch.arange(4))
    assert float(naive_i2t) == pytest.approx(math.log(2) / 2, rel=0.05)  # log 2 on both rows of image 0
    swapped = multi_positive_clip_loss(text, scene, torch.tensor([1, 1, 0, 2]), scale)
    assert float(swapped) > 10  # wrong pairs are punished hard


def test_logit_scale_starts_at_temperature_and_is_clamped():
    assert LogitScale(0.07)().item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert LogitScale(0.001)().item() == 100.0


def test_retrieval_recall_both_directions():
    scene = np.eye(4, dtype=np.float32)
    text = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0]], dtype=np.float32)
    owner = np.array([0, 0, 1, 2, 3])  # caption 2 describes scene 1 but points at scene 2
    r = retrieval_recall(text, scene, owner)
    assert r["t2i_R@1"] == pytest.approx(2 / 5) and r["t2i_R@5"] == 1.0
    assert r["i2t_R@1"] == pytest.approx(1 / 4)
    assert r["recall_mean"] == pytest.approx(np.mean([r[k] for k in r if k != "recall_mean"]))


def test_projectors_and_series_encoder_state_dicts(tmp_path):
    proj = create_projector(384, 16)
    torch.save(proj.state_dict(), tmp_path / "p.pt")
    state = torch.load(tmp_path / "p.pt", weights_only=True)
    assert set(state) == {"weight", "bias"} and state["weight"].shape == (16, 384)
    enc = TimeSeriesEncoder(6, 16)
    series = torch.randn(5, 20, 6) * 10 + 3
    enc.set_normalisation(series)
    assert torch.allclose(enc.mean, series.reshape(-1, 6).mean(0)) and enc(series).shape == (5, 16)
    torch.save(enc.state_dict(), tmp_path / "ts.pt")
    again = TimeSeriesEncoder(6, 16)
    again.load_state_dict(torch.load(tmp_path / "ts.pt", weights_only=True))
    assert torch.allclose(again(series), enc(series))


def test_model_fuses_series_on_the_scene_side():
    model = SceneSearchModel(8, 12, embed_dim=4, series_dim=3)
    feats = FeatureTensors.build(np.random.rand(6, 8), np.array([0, 0, 1, 1, 2, 2]), np.random.rand(3, 12), np.random.rand(3, 10, 3))
    batch = feats.collate([2, 0])
    assert batch["owner"].tolist() == [0, 0, 1, 1] and batch["captions"].tolist() == [4, 5, 0, 1]
    scene, image_only = model.embed_scene(feats.image, feats.series)
    assert not torch.allclose(scene, image_only)
    assert torch.allclose(scene.norm(dim=1), torch.ones(3))
    assert model.contrastive_loss(feats, batch).item() > 0


def _db() -> VectorDB:
    return VectorDB(
        scenes=[{"scene_id": "a", "description": "rain", "location": "x", "image_path": "images/a.jpg", "metadata": {"k": 1},
                 "umap_coords": [0.5, 1.5], "descriptions": ["rain", "雨"]},
                {"scene_id": "b", "description": "sun", "image_path": "images/b.jpg"}],
        text_embeddings=np.array([[1, 0, 0], [0, 1, 0]], np.float32),
        image_embeddings=np.array([[0.8, 0.6, 0], [0, 0.6, 0.8]], np.float32),
        description="test", extra={"data_dir": "/data"},
    )


def test_vector_db_versioned_roundtrip_and_search(tmp_path):
    db = _db()
    db.save(tmp_path / "vector_db.json")
    raw = json.loads((tmp_path / "vector_db.json").read_text())
    assert raw["version"] == "1.0" and raw["total_scenes"] == 2 and raw["embedding_dim"] == {"text": 3, "image": 3}
    assert raw["data_dir"] == "/data"
    first = raw["scenes"][0]
    for key in ("scene_id", "description", "location", "image_path", "image_url", "text_embedding", "image_embedding", "umap_coords", "metadata"):
        assert key in first
    assert first["descriptions"] == ["rain", "雨"] and first["umap_coords"] == [0.5, 1.5]
    back = load_vector_db(tmp_path / "vector_db.json")
    assert back.scene_ids == ["a", "b"] and back.extra["data_dir"] == "/data"
    assert np.allclose(back.image_embeddings, db.image_embeddings)
    hits = back.search(np.array([0, 0, 1.0]), top_k=5)
    assert [i for i, _ in hits] == [1, 0] and hits[0][1] == pytest.approx(0.8)
    assert back.search(np.array([1.0, 0, 0]), top_k=1, against="text") == [(0, pytest.approx(1.0))]
    with pytest.raises(DataError, match="query has 2 dimensions"):
        back.search(np.ones(2))


def test_vector_db_reads_the_flat_shape(tmp_path):
    flat = [
        {"vec": [1, 0], "type": "text", "text": "rainy night", "scene_id": "s1", "image_path": "images\\s1.jpg"},
        {"vec": [0, 1], "type": "image", "text": "rainy night", "scene_id": "s1", "image_path": "images\\s1.jpg"},
        {"vec": [1, 1], "type": "image", "scene_id": "s2", "image_path": "images/s2.jpg"},
        {"vec": [0.5, 0], "type": "text", "text": "sunny", "scene_id": "s2"},
    ]
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    db = load_vector_db(tmp_path / "flat.json")
    assert db.scene_ids == ["s1", "s2"] and db.scenes[0]["description"] == "rainy night"
    assert db.text_embeddings.tolist() == [[1, 0], [0.5, 0]] and db.image_embeddings.tolist() == [[0, 1], [1, 1]]
    db.save(tmp_path / "converted.json")  # converted to the versioned shape
    assert json.loads((tmp_path / "converted.json").read_text())["total_scenes"] == 2


@pytest.mark.parametrize("content, message", [
    ({"no": "scenes"}, "not a vector DB"),
    ([{"vec": [1], "type": "audio", "scene_id": "a"}], "'type' must be 'text' or 'image'"),
    ([{"vec": [1], "type": "text", "scene_id": "a"}], "scene 'a' has no 'image' vector"),
    ({"scenes": [{"scene_id": "a", "text_embedding": [1]}]}, "missing 'image_embedding'"),
    ({"scenes": [{"text_embedding": [1], "image_embedding": "x"}]}, "embedding"),
    ({"scenes": [{"text_embedding": [1], "image_embedding": [1]}, {"text_embedding": [1, 2], "image_embedding": [1]}]},
     "text embeddings have different lengths"),
])
def test_vector_db_bad_files(tmp_path, content, message):
    (tmp_path / "bad.json").write_text(json.dumps(content))
    with pytest.raises(DataError, match=message):
        load_vector_db(tmp_path / "bad.json")
