"""Training images: decoded to RGB on white, squared (crop or pad), turned into the VAE's pixel range."""

from __future__ import annotations

from pathlib import Path


def load_rgb(path: Path):
    """An RGB image; transparency is flattened on white (floor plans are black lines on white)."""
    from PIL import Image

    from kitaeru.data.images import check_image_size, pil_open

    with pil_open(path) as im:
        check_image_size(*im.size, str(path))
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
            canvas.alpha_composite(im)
            return canvas.convert("RGB")
        return im.convert("RGB")


def square(image, resolution: int, *, center_crop: bool, pad: bool, crop_fraction: tuple[float, float] = (0.5, 0.5)):
    """``resolution``-pixel square: padded on white, or cropped (centre or at ``crop_fraction``)."""
    from PIL import Image

    w, h = image.size
    if pad:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    else:
        side = min(w, h)
        fx, fy = (0.5, 0.5) if center_crop else crop_fraction
        left, top = int(round((w - side) * fx)), int(round((h - side) * fy))
        image = image.crop((left, top, left + side, top + side))
    return image.resize((resolution, resolution), Image.BICUBIC)


def to_pixels(image, flip: bool = False):
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    return tensor.flip(-1) if flip else tensor
