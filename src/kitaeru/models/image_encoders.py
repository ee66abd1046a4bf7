"""Frozen image encoders created by name, with explicit pooling and a fast preprocessing path.

Names::

    torchvision:<arch>        torchvision.models (mobilenet_v2, mobilenet_v3_small, resnet50, vit_b_16, ...)
    timm:<arch>               any timm model (vit_base_patch16_224, lcnet_050, convnext_tiny, ...);
                              timm:tf_efficientnet_lite0/1/2 find packaged ImageNet weights offline
    open_clip:<arch>[/<tag>]  an OpenCLIP model (ViT-L-14, ViT-B-32/laion2b_s34b_b79k, ...)
    vit_l_14, vit_b_32, ...   aliases of the OpenCLIP ViTs (the embedding guide's names)
    <arch>                    a bare OpenCLIP model name

``pretrained`` chooses the weights: ``"default"`` (the family's standard weights), ``"openclip"``
(same, for OpenCLIP), an OpenCLIP tag, a local checkpoint path, or ``None``/``"none"`` (random
init: nothing is downloaded). ``weights`` loads a local state dict on top.

Pooling (``pool``) is what the embedding means:

* ViTs, ``cls``: the class token after the final norm and projection — exactly what the model's own
  image encoder returns (OpenCLIP ``encode_image``; timm/torchvision: class token after the final
  norm, these have no projection).
* ViTs, ``mean``: the mean of the final patch tokens (class/prefix tokens excluded) after the final
  norm, then the same projection as ``cls`` (OpenCLIP), so both live in the same space.
* CNNs: global average pooling of the last feature map (``cls`` is an error: there is no token).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from kitaeru.core.errors import ConfigError
from kitaeru.models.encoder_families import (
    FAMILIES,
    load_local_weights,
    offline_weights_file,
)

__all__ = [
    "ImageEncoder",
    "create_image_encoder",
    "offline_weights_file",
    "parse_name",
    "preprocess",
]

ALIASES = {
    "vit_l_14": "open_clip:ViT-L-14",
    "vit_b_32": "open_clip:ViT-B-32",
    "vit_b_16": "open_clip:ViT-B-16",
    "vit_h_14": "open_clip:ViT-H-14",
}
POOLS = ("default", "cls", "mean")
RANDOM_INIT_SEED = 0


def parse_name(name: str) -> tuple[str, str, str | None]:
    """``"open_clip:ViT-B-32/openai"`` → ``("open_clip", "ViT-B-32", "openai")``."""
    text = ALIASES.get(name.strip(), name.strip())
    if ":" in text and not os.path.exists(text):
        family, arch = text.split(":", 1)
    else:
        family, arch = "open_clip", text
    family = family.replace("-", "_").lower()
    if family in ("openclip", "open_clip_torch"):
        family = "open_clip"
    tag = None
    if family == "open_clip" and "/" in arch:
        arch, tag = arch.split("/", 1)
    if family not in ("torchvision", "timm", "open_clip"):
        raise ConfigError(f"image encoder '{name}': unknown family '{family}' (use torchvision:, timm: or open_clip:)")
    if not arch:
        raise ConfigError(f"image encoder '{name}': missing architecture name")
    return family, arch, tag


@dataclass
class ImageEncoder:
    """A frozen image model plus its preprocessing; ``encode`` returns un-normalised float32 vectors."""

    name: str
    pretrained: str
    pool: str
    dim: int
    image_size: int
    device: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str
    module: torch.nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    text_model: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)

    # ---- preprocessing ---------------------------------------------------------------------
    def transform(self, image: Image.Image) -> torch.Tensor:
        """PIL image → normalised ``(3, S, S)`` float tensor (resize + centre crop, or pad)."""
        return preprocess(image, self.image_size, self.mean, self.std, self.resize)

    # ---- encoding --------------------------------------------------------------------------
    @property
    def supports_text(self) -> bool:
        return self.text_model is not None

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` → ``(B, dim)`` float32 on CPU."""
        device = torch.device(self.device)
        with torch.inference_mode():
            x = batch.to(device, non_blocking=True)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16):
                    out = self.forward(x)
            else:
                out = self.forward(x)
            return out.float().cpu()

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        chunks = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.transform(im) for im in images[start:start + batch_size]])
            chunks.append(self.encode(batch).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def encode_text(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Text embeddings in the image space (CLIP-family models only)."""
        if not self.supports_text:
            raise ConfigError(f"model '{self.name}' has no text tower: text queries need an OpenCLIP model")
        device = torch.device(self.device)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                tokens = self.tokenizer(list(texts[start:start + batch_size])).to(device)
                chunks.append(self.text_model.encode_text(tokens).float().cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), np.float32)

    def to(self, device: str) -> "ImageEncoder":
        self.module.to(device)
        if self.text_model is not None:
            self.text_model.to(device)
        self.device = str(device)
        return self


def preprocess(
    image: Image.Image,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    resize: str = "crop",
) -> torch.Tensor:
    """Resize (shorter side to ``size`` + centre crop, or longer side + pad) and normalise."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    if resize == "pad":
        scale = size / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = image.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
        fill = tuple(int(round(m * 255)) for m in mean)  # pads become ~0 after normalisation
        canvas = Image.new("RGB", (size, size), fill)
        canvas.paste(resized, ((size - nw) // 2, (size - nh) // 2))
        image = canvas
    elif resize == "crop":
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        resized = image.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        image = resized.crop((left, top, left + size, top + size))
    else:
        raise ConfigError(f"--resize: unknown mode '{resize}' (choose crop or pad)")
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


def create_image_encoder(
    name: str,
    *,
    pretrained: str | None = "default",
    weights: str | os.PathLike | None = None,
    pool: str = "default",
    image_size: int | None = None,
    resize: str = "crop",
    device: str = "cpu",
) -> ImageEncoder:
    """Create a frozen, eval-mode image encoder by name (see the module docstring)."""
    if pool not in POOLS:
        raise ConfigError(f"--pool: unknown pooling '{pool}' (choose cls or mean)")
    if resize not in ("crop", "pad"):
        raise ConfigError(f"--resize: unknown mode '{resize}' (choose crop or pad)")
    pretrained_text = "none" if pretrained is None else str(pretrained)
    if weights is not None and pretrained_text == "default":
        pretrained_text = "none"  # the local weights file replaces the standard weights: no download
    family, arch, tag = parse_name(name)
    builder = FAMILIES[family]
    # Random-init weights come from a fixed seed (without touching the caller's RNG), so the same
    # name builds the same model in every process: vectors embedded by one command can be
    # queried by another (index search, serve, multimodal search).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        parts = builder(arch, tag, pretrained_text, pool, image_size)
    module = parts["module"]
    if weights is not None:
        load_local_weights(module, weights)
    module.eval().requires_grad_(False)
    text_model = parts.get("text_model")
    if text_model is not None:
        text_model.eval().requires_grad_(False)
    encoder = ImageEncoder(
        name=name,
        pretrained=str(weights) if weights is not None else parts["pretrained"],
        pool=parts["pool"],
        dim=0,
        image_size=parts["image_size"],
        device="cpu",
        mean=parts["mean"],
        std=parts["std"],
        resize=resize,
        module=module,
        forward=parts["forward"],
        text_model=text_model,
        tokenizer=parts.get("tokenizer"),
    )
    with torch.inference_mode():
        probe = torch.zeros(1, 3, encoder.image_size, encoder.image_size)
        encoder.dim = int(encoder.forward(probe).shape[-1])
    return encoder.to(device)
