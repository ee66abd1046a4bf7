"""The document-feature network: a timm backbone and a small normalised embedding head.

``DocClassNet`` is exactly the inference branch that is exported to ONNX: backbone (its last
feature stage) → global average pool → Linear → LayerNorm → Linear → LayerNorm → L2 normalise.
Margin-loss class weights are not part of it; they live in the training module only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from kitaeru.core.errors import ConfigError

if TYPE_CHECKING:
    from .config import DocclassConfig

_HARDSWISH_NAMES = ("Hardswish", "HardSwish", "HardSwishMe")


def replace_hardswish(module: nn.Module) -> int:
    """Swap every Hardswish activation in ``module`` for ReLU in place (quantisation friendly).

    Returns how many were replaced. timm builds LCNet with its own or torch's Hardswish class
    depending on the version, so both are matched by class name.
    """
    count = 0
    for name, child in module.named_children():
        if type(child).__name__ in _HARDSWISH_NAMES:
            setattr(module, name, nn.ReLU(inplace=True))
            count += 1
        else:
            count += replace_hardswish(child)
    return count


def create_backbone(name: str, pretrained: str = "default", *, relu: bool = True) -> nn.Module:
    """A timm model in features-only mode returning its last stage.

    ``pretrained``: ``"default"`` = timm's hub weights, ``"none"`` = random init, or a local weights
    file (a state dict of the same timm model, or a checkpoint holding one under ``state_dict``).
    """
    import timm

    choice = (pretrained or "none").strip()
    local: Path | None = None
    if choice.lower() not in ("default", "none"):
        local = Path(choice).expanduser()
        if not local.is_file():
            raise ConfigError(f"model.pretrained: '{pretrained}' is neither 'default', 'none' nor an existing weights file")
    if not timm.is_model(name):
        raise ConfigError(f"model.backbone: unknown timm model '{name}' (e.g. lcnet_050, lcnet_075, lcnet_100, mobilenetv3_small_100)")
    try:
        backbone = timm.create_model(name, pretrained=choice.lower() == "default", features_only=True, out_indices=(-1,))
    except Exception as exc:  # noqa: BLE001 - hub failures come in many types (offline, 404, SSL)
        if choice.lower() == "default":
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                f"model.pretrained: cannot fetch timm's '{name}' weights ({first[:160]}); "
                "use --pretrained none or a local weights file"
            ) from exc
        raise
    if local is not None:
        _load_local_weights(backbone, local)
    if relu:
        replace_hardswish(backbone)
    return backbone


def _load_local_weights(backbone: nn.Module, path: Path) -> None:
    """Load a full-model or features-only state dict into the features-only ``backbone``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"model.pretrained: {path}: cannot read weights ({type(exc).__name__})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"model.pretrained: {path}: not a state dict")
    own = backbone.state_dict()
    # A full classifier's state dict has extra keys (conv_head, classifier): keep the shared ones.
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < len(own):
        missing = [k for k in own if k not in usable][:3]
        raise ConfigError(f"model.pretrained: {path}: does not fit the backbone (missing or mis-shaped: {', '.join(missing)} ...)")
    backbone.load_state_dict(usable)


class EmbeddingHead(nn.Module):
    """Global average pool → Linear(C→E) → LayerNorm → Linear(E→E) → LayerNorm → L2 normalise."""

    def __init__(self, in_channels: int, embedding_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_channels, embedding_dim)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.fc = nn.Linear(embedding_dim, embedding_dim)
        self.norm2 = nn.LayerNorm(embedding_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = features.mean(dim=(2, 3))
        x = self.norm2(self.fc(self.norm1(self.proj(x))))
        return F.normalize(x, dim=1)


class DocClassNet(nn.Module):
    """Backbone + head: image (B, 3, S, S) → unit-length feature (B, E)."""

    def __init__(self, backbone: nn.Module, embedding_dim: int):
        super().__init__()
        self.backbone = backbone
        channels = backbone.feature_info.channels()[-1]
        self.head = EmbeddingHead(channels, embedding_dim)
        self.embedding_dim = embedding_dim

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(img)[-1])


def create_docclass_net(backbone: str, *, pretrained: str = "default", relu: bool = True, embedding_dim: int = 128) -> DocClassNet:
    """The guide's network (``lcnet_050``: 256 channels → 128-d features) from config values."""
    return DocClassNet(create_backbone(backbone, pretrained, relu=relu), embedding_dim)


def create_network(config: "DocclassConfig", *, pretrained: str | None = None) -> DocClassNet:
    """The network a docclass config describes (``pretrained`` overrides the config's weights)."""
    m = config.model
    return create_docclass_net(
        m.backbone, pretrained=m.pretrained if pretrained is None else pretrained, relu=m.relu, embedding_dim=m.embedding_dim
    )
