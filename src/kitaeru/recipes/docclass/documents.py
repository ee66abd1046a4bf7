"""Document template pools, the orientation class scheme and synthetic "photos" of documents.

* :func:`read_template_pool` reads a folder (recursive, local or fsspec URL) of document images,
  each one a template; corrupt images are skipped and listed, an empty or unreadable pool is a
  :class:`DataError`. Templates are decoded in parallel and kept small (``max_side``).
* Every template × rotation × flip state is a class (:func:`orientations`). A vertical flip is the
  same picture as a horizontal flip turned 180°, so such duplicates share one class instead of
  training two labels on identical images.
* :class:`DocumentAugment` turns a template into a random photo of it with torchvision.transforms.v2
  (perspective warp on a background, crop, lighting, shadow, blur, JPEG, noise);
  :class:`AugmentedDocuments` is the map-style dataset over classes × draws. Validation datasets
  pass ``draw_seed`` so their draws are fixed and disjoint from the training stream.
* :func:`preprocess_images` is the inference preprocessing in NumPy only, so classification from
  an ONNX model never needs PyTorch; torch/torchvision are imported inside the training-side code.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from kitaeru.core.errors import DataError
from kitaeru.core.storage import IMAGE_EXTENSIONS, is_remote, list_files

# timm's ImageNet normalisation, which lcnet_050's pretrained weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Orientation = tuple[int, str]  # (rotation in degrees counter-clockwise, flip state)


@dataclass
class TemplatePool:
    """The readable templates of a pool, each with a unique label, plus what was skipped and why."""

    root: str
    images: list[Image.Image]
    labels: list[str]
    paths: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


def _read_one(path: str, max_side: int) -> Image.Image:
    from kitaeru.data.images import open_image

    image = open_image(path, min_side=max(16, max_side // 2))
    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


def _relative(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """``path`` below ``root`` as a ``/``-separated string (local paths and URLs alike)."""

    def bare(text: str) -> str:
        text = text.split("://", 1)[1] if "://" in text else text
        return text.replace(os.sep, "/").strip("/")

    base, full = bare(str(root)), bare(str(path))
    if base and full.startswith(base + "/"):
        return full[len(base) + 1 :]
    return full.rsplit("/", 1)[-1]


def template_label(root: str | os.PathLike, path: str | os.PathLike) -> str:
    """Label of a template file: its sub-folder's name when inside one, else the file stem."""
    parts = _relative(root, path).split("/")
    return parts[0] if len(parts) > 1 else Path(parts[-1]).stem


def _unique_label(root: str, path: str) -> str:
    """A label that is unique per file: the path below the pool root without its suffix."""
    relative = _relative(root, path)
    return relative[: -len(Path(relative).suffix)] if Path(relative).suffix else relative


def read_template_pool(
    root: str | os.PathLike,
    *,
    max_side: int = 256,
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    label_by: str = "path",
    workers: int | None = None,
) -> TemplatePool:
    """Decode every image under ``root`` (recursively) to RGB with its longest side at most ``max_side``.

    ``label_by="path"`` labels each file by its path below ``root`` (unique per file, for training);
    ``"folder"`` by :func:`template_label` (sub-folder name or file stem, for registration).
    """
    root_text = str(root)
    if not is_remote(root_text) and not Path(root_text).exists():
        raise DataError(f"{root_text}: template pool not found")
    files = list_files(root_text, extensions)
    if not files:
        raise DataError(f"{root_text}: no template images found (looked for {', '.join(extensions)}, recursively)")
    threads = workers or min(8, (os.cpu_count() or 1) * 2)
    results: list[Image.Image | DataError] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for outcome in pool.map(lambda p: _safe_read(p, max_side), files):
            results.append(outcome)
    images, labels, paths, skipped = [], [], [], []
    for path, outcome in zip(files, results):
        if isinstance(outcome, DataError):
            skipped.append({"path": path, "reason": str(outcome)})
            continue
        images.append(outcome)
        paths.append(path)
        labels.append(_unique_label(root_text, path) if label_by == "path" else template_label(root_text, path))
    if not images:
        raise DataError(f"{root_text}: none of the {len(files)} template image(s) could be read (first: {skipped[0]['reason']})")
    return TemplatePool(root=root_text, images=images, labels=labels, paths=paths, skipped=skipped)


def _safe_read(path: str, max_side: int) -> Image.Image | DataError:
    try:
        return _read_one(path, max_side)
    except DataError as exc:
        return exc


# ---- orientation classes -----------------------------------------------------------------------


def orient_array(array: np.ndarray, orientation: Orientation) -> np.ndarray:
    """``array`` (H, W, ...) flipped, then turned counter-clockwise by the orientation's rotation."""
    rotation, flip = orientation
    if flip == "horizontal":
        array = array[:, ::-1]
    elif flip == "vertical":
        array = array[::-1]
    elif flip != "none":
        raise ValueError(f"unknown flip state '{flip}'")
    return np.rot90(array, k=(rotation // 90) % 4)


def orientations(rotations: Sequence[int], flips: Sequence[str]) -> list[Orientation]:
    """The distinct (rotation, flip) pairs of ``rotations × flips``, in that order.

    Pairs that produce the same picture (vertical flip = horizontal flip + 180°) are kept once.
    """
    probe = np.arange(12).reshape(3, 4)  # asymmetric, so every distinct transform gives a distinct array
    seen: set[tuple[tuple[int, ...], bytes]] = set()
    out: list[Orientation] = []
    for rotation in rotations:
        for flip in flips:
            picture = np.ascontiguousarray(orient_array(probe, (rotation, flip)))
            key = (picture.shape, picture.tobytes())
            if key not in seen:
                seen.add(key)
                out.append((int(rotation), str(flip)))
    return out


def orientation_name(orientation: Orientation) -> str:
    rotation, flip = orientation
    return f"rot{rotation}" + ("" if flip == "none" else f"+{flip[0]}flip")


# ---- inference preprocessing (NumPy only) ------------------------------------------------------


def preprocess_images(
    images: Sequence[Image.Image],
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Images squashed to ``size``×``size`` and normalised: float32 array (N, 3, size, size)."""
    out = np.empty((len(images), 3, size, size), dtype=np.float32)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    for i, image in enumerate(images):
        resized = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        out[i] = (np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0 - m) / s
    return out


# ---- synthetic photos (torch / torchvision.transforms.v2) --------------------------------------


class DocumentAugment:
    """A random photo of a document: a callable on a uint8 (3, H, W) tensor.

    ``photo(doc)`` returns a uint8 (3, S, S) image; calling the object returns it as a normalised
    float tensor ready for the network. All randomness comes from torch's generator, so a caller can
    fix a draw with ``torch.manual_seed``.
    """

    def __init__(
        self,
        image_size: int,
        *,
        perspective: float = 0.3,
        margin: float = 0.15,
        crop_scale: Sequence[float] = (0.85, 1.0),
        blur_p: float = 0.3,
        noise_std: float = 0.03,
        brightness: float = 0.3,
        contrast: float = 0.3,
        saturation: float = 0.3,
        hue: float = 0.05,
        jpeg_quality: Sequence[int] = (30, 95),
        jpeg_p: float = 0.5,
        shadow_p: float = 0.4,
        scan_p: float = 0.1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        import torch
        from torchvision.transforms import v2

        self.image_size = int(image_size)
        # Work a little above the output size so warps and crops have pixels to lose.
        self.work_size = int(round(self.image_size * 1.25))
        self.perspective = float(perspective)
        self.margin = float(margin)
        self.noise_std = float(noise_std)
        self.shadow_p = float(shadow_p)
        self.scan_p = float(scan_p)
        self._mean = torch.tensor(mean).view(3, 1, 1)
        self._std = torch.tensor(std).view(3, 1, 1)
        self._crop = v2.RandomResizedCrop(self.image_size, scale=tuple(crop_scale), ratio=(0.85, 1.18), antialias=True)
        self._lighting = v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
        self._blur = v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=blur_p)
        self._jpeg = v2.RandomApply([v2.JPEG(quality=tuple(int(q) for q in jpeg_quality))], p=jpeg_p)

    def _on_background(self, doc):
        """The document squashed to the work size, pasted on a noisy background with random margins."""
        import torch
        from torchvision.transforms.v2 import functional as F

        side = self.work_size
        inner = max(8, int(round(side / (1 + 2 * self.margin * float(torch.rand(())))))) if self.margin else side
        doc = F.resize(doc, [inner, inner], antialias=True)
        # Desks and tables: a grey level with a slight tint, not arbitrary saturated colours.
        colour = (torch.randint(30, 226, (1, 1, 1)) + torch.randint(-20, 21, (3, 1, 1))).clamp(0, 255).to(torch.int16)
        canvas = colour + torch.randint(-12, 13, (3, side, side), dtype=torch.int16)
        top = int(torch.randint(0, side - inner + 1, ()))
        left = int(torch.randint(0, side - inner + 1, ()))
        canvas[:, top : top + inner, left : left + inner] = doc.to(torch.int16)
        return canvas.clamp(0, 255).to(torch.uint8), colour.flatten().tolist()

    def _warp(self, image, fill: list[int]):
        """Move each corner inward by up to ``perspective``/2 of the side: a photo taken at an angle."""
        import torch
        from torchvision.transforms.v2 import functional as F

        if self.perspective <= 0:
            return image
        _, h, w = image.shape
        dx, dy = self.perspective * w / 2, self.perspective * h / 2
        start = [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]
        jitter = torch.rand(4, 2)
        end = [
            [int(jitter[0, 0] * dx), int(jitter[0, 1] * dy)],
            [w - 1 - int(jitter[1, 0] * dx), int(jitter[1, 1] * dy)],
            [w - 1 - int(jitter[2, 0] * dx), h - 1 - int(jitter[2, 1] * dy)],
            [int(jitter[3, 0] * dx), h - 1 - int(jitter[3, 1] * dy)],
        ]
        return F.perspective(image, start, end, interpolation=F.InterpolationMode.BILINEAR, fill=fill)

    def _shadow(self, image):
        """Darken one side of a random soft line, as a hand or phone casts over a document."""
        import torch

        if float(torch.rand(())) >= self.shadow_p:
            return image
        _, h, w = image.shape
        angle = float(torch.rand(())) * 2 * np.pi
        ys = torch.linspace(-0.5, 0.5, h).view(h, 1)
        xs = torch.linspace(-0.5, 0.5, w).view(1, w)
        offset = (float(torch.rand(())) - 0.5) * 0.8
        softness = 0.02 + 0.15 * float(torch.rand(()))
        distance = xs * np.cos(angle) + ys * np.sin(angle) - offset
        mask = torch.sigmoid(distance / softness)
        strength = 0.25 + 0.45 * float(torch.rand(()))
        shaded = image.float() * (1 - strength * mask)
        return shaded.round().clamp(0, 255).to(torch.uint8)

    def photo(self, doc):
        """A uint8 (3, S, S) random photo of the uint8 (3, H, W) document ``doc``.

        With probability ``scan_p`` it is a flat scan instead (the whole page, no background or
        warp): registered templates look like that, so training must see it too.
        """
        import torch
        from torchvision.transforms.v2 import functional as F

        if self.scan_p and float(torch.rand(())) < self.scan_p:
            image = F.resize(doc, [self.image_size, self.image_size], antialias=True)
        else:
            canvas, fill = self._on_background(doc)
            image = self._crop(self._warp(canvas, fill))
        image = self._lighting(image)
        image = self._shadow(image)
        image = self._blur(image)
        return self._jpeg(image)

    def normalise(self, image):
        """uint8 (3, S, S) → float, with per-pixel noise, normalised for the network."""
        import torch

        x = image.float() / 255.0
        if self.noise_std > 0:
            x = (x + torch.randn_like(x) * (float(torch.rand(())) * self.noise_std)).clamp(0, 1)
        return (x - self._mean) / self._std

    def __call__(self, doc):
        return self.normalise(self.photo(doc))


def image_to_tensor(image: Image.Image):
    """A PIL image as a uint8 (3, H, W) tensor."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(image.convert("RGB")).transpose(2, 0, 1)))


def orient_tensor(doc, orientation: Orientation):
    """A uint8 (3, H, W) tensor in the given orientation (same convention as :func:`orient_array`)."""
    import torch

    rotation, flip = orientation
    if flip == "horizontal":
        doc = torch.flip(doc, dims=[2])
    elif flip == "vertical":
        doc = torch.flip(doc, dims=[1])
    return torch.rot90(doc, k=(rotation // 90) % 4, dims=[1, 2])


class AugmentedDocuments:
    """Map-style dataset: item ``i`` is a random photo of class ``i // samples_per_class``.

    Class ``c`` is template ``c // len(orientations)`` in orientation ``c % len(orientations)``.
    With ``draw_seed`` every item is a fixed draw (``draw_seed + i``): validation sets are the same
    every epoch and, with a seed far from the training stream's, held out from it.
    """

    def __init__(
        self,
        templates: Sequence[Image.Image],
        orientation_list: Sequence[Orientation],
        samples_per_class: int,
        augment: DocumentAugment,
        *,
        draw_seed: int | None = None,
    ):
        self.templates = [image_to_tensor(t) for t in templates]
        self.orientations = list(orientation_list)
        self.samples_per_class = int(samples_per_class)
        self.augment = augment
        self.draw_seed = draw_seed

    @property
    def num_classes(self) -> int:
        return len(self.templates) * len(self.orientations)

    def __len__(self) -> int:
        return self.num_classes * self.samples_per_class

    def class_of(self, index: int) -> int:
        return index // self.samples_per_class

    def __getitem__(self, index: int) -> tuple[Any, int]:
        import torch

        if not 0 <= index < len(self):
            raise IndexError(index)
        label = self.class_of(index)
        template, orientation = divmod(label, len(self.orientations))
        doc = orient_tensor(self.templates[template], self.orientations[orientation])
        if self.draw_seed is None:
            return self.augment(doc), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.draw_seed + index)
            return self.augment(doc), label


def augmented_photo(image: Image.Image, augment: DocumentAugment, *, seed: int) -> Image.Image:
    """One reproducible random photo of ``image`` (upright) as a PIL image of the augment's size."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        photo = augment.photo(image_to_tensor(image))
    return Image.fromarray(photo.permute(1, 2, 0).numpy())
