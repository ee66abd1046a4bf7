"""Shared encoders: names, pooling, local checkpoints, image decoding."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from kitaeru.core.errors import ConfigError, DataError
from kitaeru.data.images import open_image
from kitaeru.models.image_encoders import create_image_encoder, parse_name, preprocess
from kitaeru.models.text_encoders import create_text_encoder, offline_minilm_path


@pytest.fixture(scope="module")
def picture():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8))


def test_parse_names():
    assert parse_name("vit_l_14") == ("open_clip", "ViT-L-14", None)
    assert parse_name("open_clip:ViT-B-32/openai") == ("open_clip", "ViT-B-32", "openai")
    assert parse_name("timm:lcnet_050") == ("timm", "lcnet_050", None)
    with pytest.raises(ConfigError, match="unknown family"):
        parse_name("keras:resnet")


def test_vit_pools_differ_and_have_model_dim(picture):
    cls = create_image_encoder("timm:vit_tiny_patch16_224", pretrained=None, pool="cls", image_size=32)
    mean = create_image_encoder("timm:vit_tiny_patch16_224", pretrained=None, pool="mean", image_size=32)
    mean.module.load_state_dict(cls.module.state_dict())
    a, b = cls.encode_images([picture]), mean.encode_images([picture])
    assert a.shape == b.shape == (1, 192)
    assert not np.allclose(a, b)


def test_cnn_rejects_cls():
    with pytest.raises(ConfigError, match="no class token|without a class token"):
        create_image_encoder("torchvision:mobilenet_v3_small", pretrained=None, pool="cls")
    enc = create_image_encoder("torchvision:mobilenet_v3_small", pretrained=None)
    assert enc.dim == 576 and enc.pool == "mean"


def test_openclip_local_checkpoint_and_text(tmp_path, picture):
    enc = create_image_encoder("open_clip:ViT-S-32", pretrained=None, image_size=32)
    ckpt = tmp_path / "vit_s_32.pt"
    torch.save(enc.text_model.state_dict(), ckpt)
    again = create_image_encoder("open_clip:ViT-S-32", pretrained=str(ckpt), image_size=32)
    assert again.pretrained == str(ckpt)
    np.testing.assert_allclose(enc.encode_images([picture]), again.encode_images([picture]), atol=1e-5)
    text = again.encode_text(["a red car", "a night street"])
    assert text.shape == (2, again.dim)
    mean = create_image_encoder("open_clip:ViT-S-32", pretrained=str(ckpt), image_size=32, pool="mean")
    assert mean.encode_images([picture]).shape == (1, again.dim)  # projected into the same space
    with pytest.raises(ConfigError, match="unknown OpenCLIP tag"):
        create_image_encoder("open_clip:ViT-S-32/no_such_tag")
    with pytest.raises(ConfigError, match="not found"):
        create_image_encoder("open_clip:ViT-S-32", pretrained=str(tmp_path / "missing.pt"))


def test_timm_and_torchvision_local_weights(tmp_path, picture):
    enc = create_image_encoder("timm:lcnet_050", pretrained=None, image_size=32)
    path = tmp_path / "lcnet.pth"
    torch.save({"state_dict": enc.module.state_dict()}, path)
    again = create_image_encoder("timm:lcnet_050", pretrained=str(path), image_size=32)
    np.testing.assert_allclose(enc.encode_images([picture]), again.encode_images([picture]), atol=1e-5)
    tv = create_image_encoder("torchvision:resnet18", pretrained=None)
    wpath = tmp_path / "r18.pth"
    torch.save(tv.module.state_dict(), wpath)
    loaded = create_image_encoder("torchvision:resnet18", weights=wpath)
    assert loaded.pretrained == str(wpath)
    with pytest.raises(ConfigError, match="match"):
        create_image_encoder("torchvision:mobilenet_v3_small", weights=wpath)


def test_offline_imagenet_mobilenet_v2_is_real(picture):
    enc = create_image_encoder("torchvision:mobilenet_v2")
    assert enc.pretrained == "default" and enc.dim == 1280
    first = enc.module.features[0][0].weight
    assert float(first.abs().mean()) > 0.05  # trained filters, not an init


def test_unknown_models():
    with pytest.raises(ConfigError, match="unknown torchvision model"):
        create_image_encoder("torchvision:nonet", pretrained=None)
    with pytest.raises(ConfigError, match="unknown timm model"):
        create_image_encoder("timm:nonet_999", pretrained=None)
    with pytest.raises(ConfigError, match="unknown pooling"):
        create_image_encoder("timm:lcnet_050", pretrained=None, pool="max")


def test_preprocess_crop_and_pad(picture):
    crop = preprocess(picture, 64, (0.5,) * 3, (0.5,) * 3, "crop")
    pad = preprocess(picture, 64, (0.5,) * 3, (0.5,) * 3, "pad")
    assert crop.shape == pad.shape == (3, 64, 64)
    assert abs(float(pad[:, 0, :].mean())) < 0.02  # padded rows are the mean colour


def test_open_image_draft_and_errors(shared_data, tmp_path):
    frame = next((shared_data / "nuscenes-scene-0061" / "samples" / "CAM_FRONT").glob("*.jpg"))
    full = open_image(frame)
    small = open_image(frame, min_side=224)
    assert full.size == (1600, 900)
    assert min(small.size) >= 224 and small.size[0] < 1600
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(frame.read_bytes()[:5000])
    with pytest.raises(DataError, match="t.jpg: cannot read image"):
        open_image(truncated)
    with pytest.raises(DataError, match="not found"):
        open_image(tmp_path / "none.jpg")


def test_text_encoder_default_and_local_folder(tmp_path):
    default = create_text_encoder()
    local = tmp_path / "minilm"
    shutil.copytree(offline_minilm_path(), local)
    again = create_text_encoder(str(local))
    texts = ["雨の夜の交差点で右折", "a sunny highway with trucks"]
    a, b = default.encode(texts), again.encode(texts)
    assert a.shape == (2, 384)
    np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ConfigError, match="not found"):
        create_text_encoder(str(tmp_path / "absent") + "/")


def test_corrupt_image_is_data_error_even_after_ultralytics_patches_pil(tmp_path):
    # Ultralytics replaces PIL.Image.open process-wide; our reader must still call a corrupt file corrupt.
    pytest.importorskip("ultralytics")
    import ultralytics.utils.patches  # noqa: F401 - applies the patch

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"definitely not an image")
    with pytest.raises(DataError, match="bad.png: cannot read image"):
        open_image(bad)
