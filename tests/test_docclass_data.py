"""docclass data, model and config pieces that need no training: template pools, the class scheme,
synthetic photos, sample documents, pairwise metrics, the network, presets and the ONNX spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kitaeru.core.config import list_presets, load_config, validate_preset
from kitaeru.core.errors import ConfigError, DataError
from kitaeru.recipes.docclass.documents import (
    AugmentedDocuments,
    DocumentAugment,
    augmented_photo,
    image_to_tensor,
    orient_array,
    orient_tensor,
    orientation_name,
    orientations,
    preprocess_images,
    read_template_pool,
    template_label,
)
from kitaeru.recipes.docclass.sample_documents import DOCUMENT_KINDS, generate_documents, render_document
from kitaeru.recipes.docclass.config import RECIPE_NAME as RECIPE, DocclassConfig
from kitaeru.recipes.docclass.metrics import auroc, pair_scores, pairwise_roc, threshold_at_fpr


# ---- class scheme ------------------------------------------------------------------------------
def test_twelve_rotation_flip_pairs_give_eight_distinct_classes():
    pairs = orientations([0, 90, 180, 270], ["none", "horizontal", "vertical"])
    assert len(pairs) == 8
    names = [orientation_name(p) for p in pairs]
    assert names[:3] == ["rot0", "rot0+hflip", "rot0+vflip"] and "rot180+hflip" not in names
    probe = np.arange(20).reshape(4, 5)
    pictures = {orient_array(probe, p).tobytes() + bytes(orient_array(probe, p).shape) for p in pairs}
    assert len(pictures) == 8  # all distinct, and the full dihedral group of the rectangle
    assert orientations([0], ["none"]) == [(0, "none")]


def test_tensor_and_array_orientation_agree():
    image = np.random.default_rng(0).integers(0, 255, (6, 9, 3), dtype=np.uint8)
    for pair in orientations([0, 90, 180, 270], ["none", "horizontal", "vertical"]):
        got = orient_tensor(image_to_tensor(Image.fromarray(image)), pair).permute(1, 2, 0).numpy()
        assert np.array_equal(got, orient_array(image, pair))


def test_dataset_labels_and_held_out_validation_draws():
    templates = [render_document(kind, 1) for kind in ("id_card", "receipt")]
    pairs = orientations([0, 90], ["none", "horizontal"])
    augment = DocumentAugment(32)
    train = AugmentedDocuments(templates, pairs, 3, augment)
    val = AugmentedDocuments(templates, pairs, 2, augment, draw_seed=10**12)
    assert train.num_classes == 8 and len(train) == 24 and len(val) == 16
    assert [val[i][1] for i in range(len(val))] == [i // 2 for i in range(16)]
    image, label = val[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 2
    assert torch.equal(val[5][0], image)  # fixed draw, every epoch
    assert not torch.equal(val[4][0], image)  # two draws of one class differ
    torch.manual_seed(0)
    assert not torch.equal(train[5][0], train[5][0])  # training draws are fresh every time
    with pytest.raises(IndexError):
        val[len(val)]


def test_augmented_photo_is_reproducible_and_changes_the_picture():
    doc = render_document("passport", 3)
    augment = DocumentAugment(64)
    a, b = augmented_photo(doc, augment, seed=1), augmented_photo(doc, augment, seed=1)
    assert a.size == (64, 64) and np.array_equal(np.asarray(a), np.asarray(b))
    plain = np.asarray(doc.resize((64, 64)), dtype=np.float32)
    assert np.abs(np.asarray(a, dtype=np.float32) - plain).mean() > 5


def test_preprocess_images_is_numpy_normalised():
    batch = preprocess_images([Image.new("RGB", (50, 20), (255, 255, 255))], 16)
    assert batch.shape == (1, 3, 16, 16) and batch.dtype == np.float32
    assert batch[0, 0, 0, 0] == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)


# ---- template pools ----------------------------------------------------------------------------
def test_real_scans_pool(shared_data):
    pool = read_template_pool(shared_data / "documents", max_side=128)
    assert len(pool) == 18 and not pool.skipped
    assert "passport/passport-td3" in pool.labels and "receipt/000" in pool.labels
    assert all(max(image.size) <= 128 for image in pool.images)
    by_folder = read_template_pool(shared_data / "documents", max_side=64, label_by="folder")
    assert set(by_folder.labels) == {"passport", "receipt"}


def test_corrupt_templates_are_skipped_and_listed(tmp_path):
    generate_documents(tmp_path / "nested" / "deeper", 2)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    pool = read_template_pool(tmp_path, max_side=64)
    assert sorted(pool.labels) == ["nested/deeper/id_card_000", "nested/deeper/passport_001"]
    assert len(pool.skipped) == 1 and pool.skipped[0]["path"].endswith("broken.jpg")
    assert "cannot read image" in pool.skipped[0]["reason"]


def test_empty_missing_and_unreadable_pools(tmp_path):
    with pytest.raises(DataError, match="no template images found"):
        read_template_pool(tmp_path)
    with pytest.raises(DataError, match="template pool not found"):
        read_template_pool(tmp_path / "nope")
    (tmp_path / "a.png").write_bytes(b"garbage")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="none of the 2 template image"):
        read_template_pool(tmp_path)


def test_pool_from_an_fsspec_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    for name, kind in (("a/one.png", "form"), ("two.png", "letter")):
        with fs.open(f"/docclass-pool/{name}", "wb") as fh:
            render_document(kind, 0).save(fh, format="PNG")
    pool = read_template_pool("memory://docclass-pool", max_side=64, label_by="folder")
    assert sorted(pool.labels) == ["a", "two"]
    fs.rm("/docclass-pool", recursive=True)


def test_template_labels():
    assert template_label("/t", "/t/id/front.png") == "id"
    assert template_label("/t/", "/t/receipt_1.jpg") == "receipt_1"


# ---- sample documents --------------------------------------------------------------------------
def test_sample_documents_command(cli, tmp_path):
    r = cli("sample", "documents", "--out", tmp_path / "docs", "--num", "6", "--seed", "2")
    assert r.exit_code == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "docs").iterdir())
    assert files == ["form_003.png", "id_card_000.png", "id_card_005.png", "letter_004.png", "passport_001.png", "receipt_002.png"]
    again = generate_documents(tmp_path / "again", 6, seed=2)
    assert all((tmp_path / "docs" / p.name).read_bytes() == p.read_bytes() for p in again)
    other = generate_documents(tmp_path / "other", 1, seed=3)[0]
    assert other.read_bytes() != (tmp_path / "docs" / "id_card_000.png").read_bytes()
    r = cli("sample", "documents", "--out", tmp_path / "two", "--num", "2", "--photos", tmp_path / "photos")
    assert r.exit_code == 0, r.stderr
    photos = sorted((tmp_path / "photos").iterdir())
    assert [p.name for p in photos] == ["id_card_000.jpg", "passport_001.jpg"]
    with Image.open(photos[0]) as photo:
        assert photo.size == (320, 320) and photo.format == "JPEG"
    r = cli("sample", "documents", "--out", tmp_path / "x", "--kinds", "id_card,menu")
    assert r.exit_code == 2 and "unknown document kind 'menu'" in r.stderr


def test_every_kind_renders_text_and_shapes():
    for kind in DOCUMENT_KINDS:
        image = np.asarray(render_document(kind, 5).convert("L"), dtype=np.float32)
        assert image.std() > 20, kind  # not a blank page
        assert (image < 60).mean() > 0.003, kind  # dark text strokes exist


# ---- metrics -----------------------------------------------------------------------------------
def test_pairwise_auroc_matches_brute_force():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((40, 8)).astype(np.float32)
    labels = rng.integers(0, 6, 40)
    pos, neg = pair_scores(feats, labels)
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(pos, neg) == pytest.approx(brute, abs=1e-9)
    assert len(pos) + len(neg) == 40 * 39 // 2


def test_threshold_and_tpr_at_fpr():
    negatives = np.linspace(0.0, 0.5, 1000).astype(np.float32)
    threshold = threshold_at_fpr(negatives, 1e-2)
    assert np.mean(negatives >= threshold) <= 1e-2 < np.mean(negatives >= threshold - 1e-3)
    perfect = np.repeat(np.eye(4, dtype=np.float32), 3, axis=0)
    metrics = pairwise_roc(perfect, np.repeat(np.arange(4), 3))
    assert metrics["auroc"] == 1.0 and metrics["tpr_fpr1e-4"] == 1.0 and 0 < metrics["threshold"] <= 1.0
    with pytest.raises(ValueError):
        pairwise_roc(perfect[:4], np.arange(4))


# ---- presets and config ------------------------------------------------------------------------
def test_every_shipped_preset_validates():
    names = list_presets(RECIPE)
    assert {"lcnet050_cosface_96", "lcnet050_arcface_128", "cpu_quickstart"} <= set(names)
    for name in names:
        config = validate_preset(DocclassConfig, RECIPE, name)
        assert config.name == name
        assert config.onnx.input_shape["img"].shape == [1, 3, config.data.image_size, config.data.image_size]


def test_seed_preset_values():
    c = validate_preset(DocclassConfig, RECIPE, "lcnet050_cosface_96")
    assert (c.model.backbone, c.model.relu, c.model.embedding_dim, c.data.image_size) == ("lcnet_050", True, 128, 96)
    assert (c.loss.name, c.loss.scale, c.loss.margin) == ("cosface", 64, 0.4)
    assert (c.optim.learning_rate, c.optim.weight_decay, c.train.epochs, c.train.precision, c.train.gradient_clip) == (1e-3, 0.1, 20, "32", 5.0)
    assert c.onnx.name == "WarpFeatureLearning" and c.onnx.options.opset_version == 16 and c.onnx.options.do_constant_folding
    assert c.onnx.dynamic_axes == {"img": {0: "batch_size"}, "feats": {0: "batch_size"}}
    assert validate_preset(DocclassConfig, RECIPE, "lcnet050_arcface_128").loss.name == "arcface"


def test_unknown_preset_lists_the_available_ones(cli):
    r = cli("docclass", "train", "--cfg-name", "lcnet_typo")
    assert r.exit_code == 2
    assert "no preset 'lcnet_typo'" in r.stderr and "lcnet050_cosface_96" in r.stderr and "lcnet050_arcface_128" in r.stderr


def test_yaml_with_unknown_keys_and_wrong_types(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  image_size: big\n  colour: red\ntrain:\n  epochs: -1\n")
    r = cli("docclass", "train", "--config", bad)
    assert r.exit_code == 2
    assert "3 problem(s)" in r.stderr
    assert "data.image_size" in r.stderr and "data.colour: unknown key" in r.stderr and "train.epochs" in r.stderr
    with pytest.raises(ConfigError, match="spatial size"):
        load_config(DocclassConfig, RECIPE, overrides={"data.image_size": 64})


def test_image_size_moves_the_onnx_input_with_it():
    c = validate_preset(DocclassConfig, RECIPE, "lcnet050_cosface_96").with_image_size(48)
    assert c.data.image_size == 48 and c.onnx.input_shape["img"].shape == [1, 3, 48, 48]


# ---- network -----------------------------------------------------------------------------------
def test_lcnet_network_relu_swap_and_unit_features():
    from kitaeru.recipes.docclass.model import create_docclass_net

    net = create_docclass_net("lcnet_050", pretrained="none", relu=True).eval()
    names = {type(m).__name__ for m in net.modules()}
    assert "Hardswish" not in names and "HardSwish" not in names and "ReLU" in names
    assert net.head.proj.in_features == 256 and net.head.fc.out_features == 128
    with torch.inference_mode():
        feats = net(torch.randn(2, 3, 64, 64))
    assert feats.shape == (2, 128) and torch.allclose(feats.norm(dim=1), torch.ones(2), atol=1e-5)
    keep = create_docclass_net("lcnet_050", pretrained="none", relu=False)
    assert any("swish" in type(m).__name__.lower() for m in keep.modules())


def test_backbone_weights_from_a_local_file(tmp_path):
    import timm

    from kitaeru.recipes.docclass.model import create_backbone

    full = timm.create_model("lcnet_050", pretrained=False)
    torch.save(full.state_dict(), tmp_path / "lcnet.pth")
    backbone = create_backbone("lcnet_050", str(tmp_path / "lcnet.pth"), relu=True)
    assert torch.equal(backbone.state_dict()["conv_stem.weight"], full.state_dict()["conv_stem.weight"])
    torch.save(timm.create_model("test_efficientnet").state_dict(), tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="does not fit the backbone"):
        create_backbone("lcnet_050", str(tmp_path / "other.pth"))
    with pytest.raises(ConfigError, match="neither 'default', 'none' nor an existing weights file"):
        create_backbone("lcnet_050", str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="unknown timm model"):
        create_backbone("lcnet_999", "none")


def test_seed_network_exports_with_the_seed_onnx_section(tmp_path):
    from kitaeru.export.onnx import export_onnx, graph_signature
    from kitaeru.recipes.docclass.model import create_network

    config = validate_preset(DocclassConfig, RECIPE, "lcnet050_cosface_96")
    net = create_network(config, pretrained="none")
    report = export_onnx(net, config.onnx, tmp_path / "lcnet.onnx")
    assert graph_signature(tmp_path / "lcnet.onnx") == ({"img": ["batch_size", 3, 96, 96]}, {"feats": ["batch_size", 128]})
    assert report.opset_version == 16 and report.max_abs_diff <= 1e-4


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_margin_losses_train_a_step():
    from kitaeru.recipes.docclass.module import DocClassModule, warmup_poly_factor

    for loss in ("cosface", "arcface"):
        config = load_config(
            DocclassConfig, RECIPE, cfg_name="lcnet050_arcface_128" if loss == "arcface" else "lcnet050_cosface_96",
            overrides={"model.pretrained": "none", "model.backbone": "test_efficientnet"},
        )
        module = DocClassModule(config, num_classes=6, meta={})
        images = torch.randn(4, 3, 32, 32)
        loss_value = module.training_step((images, torch.tensor([0, 1, 2, 5])), 0)
        loss_value.backward()
        assert torch.isfinite(loss_value) and module.loss_fn.W.grad is not None
    assert warmup_poly_factor(0, 10, 100, 1.0) == pytest.approx(0.1)
    assert warmup_poly_factor(9, 10, 100, 1.0) == pytest.approx(1.0)
    assert warmup_poly_factor(55, 10, 100, 1.0) == pytest.approx(0.5)
    assert warmup_poly_factor(100, 10, 100, 2.0) == 0.0


def test_without_a_pool_templates_are_generated_into_the_run(tmp_path):
    from kitaeru.recipes.docclass.data import build_data, resolve_pool_dir

    config = load_config(DocclassConfig, RECIPE, cfg_name="cpu_quickstart", overrides={"data.sample_templates": 3})
    assert resolve_pool_dir(config, tmp_path) == str(tmp_path / "sample_templates")
    assert sorted(p.name for p in (tmp_path / "sample_templates").iterdir()) == ["id_card_000.png", "passport_001.png", "receipt_002.png"]
    data = build_data(config, tmp_path)  # reuses the generated folder
    assert data.num_classes == 3 and len(data.train) == 3 * 320 and len(data.val) == 3 * 6
    assert data.meta() == {"templates": ["id_card_000", "passport_001", "receipt_002"], "orientations": ["rot0"], "num_classes": 3}
