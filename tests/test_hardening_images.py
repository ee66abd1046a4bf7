"""Hostile images are bounded everywhere: the one opener (``data/images.py``) checks pixels,
aspect ratio and the short side from the header, before decoding or resizing; readers count a
refused image as a skip, the API answers 400/413 (never a 500, never seconds of work)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from kitaeru.data.images import MAX_ASPECT_RATIO, MIN_SIDE, ImageRejected, check_image_size, open_image

MODES = ["RGB", "L", "1", "P", "RGBA", "LA", "I;16", "I", "F", "CMYK", "PA"]


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _image(mode: str, w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        return Image.fromarray(rng.integers(0, 60000, (h, w)).astype(dtype))
    base = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")
    if mode == "P":
        return base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    if mode == "PA":
        image = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        image.info["transparency"] = 0
        return image
    return base.convert(mode)


def _within_limits(w: int, h: int) -> bool:
    return min(w, h) >= MIN_SIDE and max(w, h) / min(w, h) <= MAX_ASPECT_RATIO


def _format_for(mode: str) -> str:
    return {"CMYK": "JPEG", "I;16": "PNG", "I": "TIFF", "F": "TIFF", "PA": "PNG"}.get(mode, "PNG")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=st.integers(1, 300), h=st.integers(1, 300), mode=st.sampled_from(MODES))
def test_reader_opens_every_mode_or_refuses_by_size(w, h, mode):
    data = _encode(_image(mode, w, h), _format_for(mode))
    if _within_limits(w, h):
        image = open_image(data, min_side=224)
        assert image.mode == "RGB" and image.size == (w, h)
    else:
        with pytest.raises(ImageRejected):
            open_image(data)


@settings(max_examples=20, deadline=None)
@given(long=st.integers(5000, 10_000_000), vertical=st.booleans())
def test_thin_images_are_refused_from_the_header(long, vertical):
    """1xN / Nx1 up to ten million pixels long: refused before a pixel is decoded."""
    size = (1, long) if vertical else (long, 1)
    with pytest.raises(ImageRejected, match="side under"):
        check_image_size(*size, "thin.png")


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail loudly if any pixel is decoded: "refused at once" means refused from the header,
    which is checked here by what ran rather than by seconds."""
    from PIL import ImageFile

    def decoded(self, *args, **kwargs):
        raise AssertionError(f"{self.size} image was decoded before it was refused")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)


def test_thin_png_bytes_are_refused_at_once(no_decoding):
    data = _encode(Image.new("L", (1, 10_000_000)), "PNG")
    with pytest.raises(ImageRejected):
        open_image(data)


def test_pixel_bombs_are_refused_before_decoding():
    data = _encode(Image.new("1", (9000, 9000)), "PNG")
    with pytest.raises(ImageRejected) as refused:
        open_image(data, max_pixels=64_000_000)
    assert refused.value.too_large


def test_exif_rotated_and_animated_images():
    image = _image("RGB", 40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rotated = open_image(_encode(image, "JPEG", exif=exif))
    assert rotated.size == (20, 40)
    frames = [_image("RGB", 30, 30, seed) for seed in range(3)]
    animated = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert open_image(animated).size == (30, 30)
    assert open_image(_encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])).size == (30, 30)


def test_sixteen_bit_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    image = open_image(_encode(Image.fromarray(ramp), "PNG"))
    grey = np.asarray(image)[..., 0]
    assert grey.min() == 0 and grey.max() == 255 and len(np.unique(grey)) > 100


# ---- the API ------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(w=st.integers(1, 2000), h=st.integers(1, 2000), mode=st.sampled_from(["RGB", "L", "P", "RGBA", "I;16", "CMYK"]))
def test_api_decoder_answers_400_413_or_an_image(w, h, mode):
    from fastapi import HTTPException

    from kitaeru.serve.app import decode_upload

    if w * h > 400_000:  # keep examples cheap: the size check needs the header only
        w, h = (w, 1) if w > h else (1, h)
    data = _encode(_image(mode, w, h), _format_for(mode))
    try:
        image = decode_upload(data, "q.png", min_side=224)
    except HTTPException as exc:
        assert exc.status_code in (400, 413) and not _within_limits(w, h)
        assert exc.detail.startswith("q.png: ")
    else:
        assert _within_limits(w, h) and image.mode == "RGB"


def test_api_thin_and_huge_uploads_are_refused_fast(no_decoding):
    from fastapi import HTTPException

    from kitaeru.serve.app import decode_upload

    for size, status in (((1, 5000), 400), ((1, 10_000_000), 400), ((9000, 9000), 413)):
        data = _encode(Image.new("1", size), "PNG")
        with pytest.raises(HTTPException) as refused:
            decode_upload(data, "bomb.png", min_side=224)
        assert refused.value.status_code == status, refused.value.detail


# ---- readers: a refused image is a counted skip, the rest of the dataset goes on --------------------
@pytest.fixture
def hostile_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (128, 96), "red").save(folder / "ok.png")
    Image.new("L", (1, 5000)).save(folder / "thin.png")
    Image.new("RGB", (2000, 20)).save(folder / "wide.png")
    return folder


def test_embed_counts_hostile_images_as_skipped(hostile_folder, tmp_path, cli):
    import json

    r = cli("embed", "--model", "open_clip:ViT-S-32", "--pretrained", "none", "--image-dir", hostile_folder,
            "--out", tmp_path / "e.parquet", "--device", "cpu", "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["embedded"] == 1 and result["skipped_inputs"]["count"] == 2
    reasons = {item["path"].rsplit("/", 1)[-1]: item["reason"] for item in result["skipped_inputs"]["items"]}
    assert "side under" in reasons["thin.png"] and "aspect ratio" in reasons["wide.png"]


def test_lora_prepare_counts_hostile_images_as_skipped(hostile_folder, tmp_path, cli):
    import json

    r = cli("lora", "prepare", "--images", hostile_folder, "--output-dir", tmp_path / "prepared", "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["images"] == 1 and len(result["skipped"]) == 2


# ---- every reader, property-tested: an image in any mode/size is read, or refused as a counted skip ----
READER_MODES = ["RGB", "L", "P", "PA", "RGBA", "LA", "I;16", "CMYK"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 400), h=st.integers(1, 400), mode=st.sampled_from(READER_MODES))
def test_document_pool_reader_reads_or_skips(tmp_path_factory, w, h, mode):
    from kitaeru.recipes.docclass.documents import read_template_pool

    folder = tmp_path_factory.mktemp("pool")
    Image.new("RGB", (64, 48), "white").save(folder / "good.png")
    (folder / f"probe.{_format_for(mode).lower()}").write_bytes(_encode(_image(mode, w, h), _format_for(mode)))
    pool = read_template_pool(folder, max_side=64, workers=1)
    if _within_limits(w, h):
        assert len(pool.images) == 2 and not pool.skipped
        assert all(image.mode == "RGB" and max(image.size) <= 64 for image in pool.images)
    else:
        assert len(pool.images) == 1 and len(pool.skipped) == 1 and "probe" in pool.skipped[0]["path"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 400), h=st.integers(1, 400), mode=st.sampled_from(READER_MODES))
def test_scene_image_decoder_reads_or_refuses(tmp_path_factory, w, h, mode):
    """The decoder the multimodal scene reader (and the map thumbnails) use: an image or the reason."""
    from kitaeru.data.scenes import decode_images

    path = tmp_path_factory.mktemp("scene") / f"scene.{_format_for(mode).lower()}"
    path.write_bytes(_encode(_image(mode, w, h), _format_for(mode)))
    (result,) = decode_images([str(path)], workers=1, min_side=32)
    if _within_limits(w, h):
        assert isinstance(result, Image.Image) and result.mode == "RGB"
    else:
        assert isinstance(result, Exception) and str(path) in str(result)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(w=st.integers(1, 400), h=st.integers(1, 400), mode=st.sampled_from(READER_MODES))
def test_detect_dataset_scan_accepts_or_names_the_problem(tmp_path_factory, w, h, mode):
    from kitaeru.recipes.detect.data import image_problem

    path = tmp_path_factory.mktemp("yolo") / f"img.{_format_for(mode).lower()}"
    path.write_bytes(_encode(_image(mode, w, h), _format_for(mode)))
    problem = image_problem(path)
    if _within_limits(w, h):
        assert problem is None
    else:
        assert problem and "pi_heif" not in problem and ("side" in problem or "aspect" in problem)


def test_detect_dataset_scan_names_a_corrupt_file_plainly(tmp_path):
    from kitaeru.recipes.detect.data import image_problem

    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    problem = image_problem(tmp_path / "junk.jpg")
    assert problem and "pi_heif" not in problem and "not an image" in problem
