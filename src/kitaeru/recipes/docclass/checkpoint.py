"""Read a docclass Lightning checkpoint back into the inference network, with its stored config,
classes, validation metrics and ``unknown`` threshold, and refuse checkpoints of another config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitaeru.core.errors import ConfigError, DataError

from .config import ARCHITECTURE_FIELDS, DocclassConfig

CHECKPOINT_KEY = "kitaeru_docclass"
NET_PREFIX = "net."


@dataclass
class DocclassCheckpoint:
    path: Path
    config: DocclassConfig
    info: dict[str, Any]  # the kitaeru section plus the epoch it was saved at
    state_dict: dict[str, Any]  # the inference network's weights only (no loss weights)

    @property
    def threshold(self) -> float | None:
        value = self.info.get("unknown_threshold")
        return None if value is None else float(value)


def read_checkpoint(path: str | os.PathLike, *, trust: bool = False, trust_flag: str | None = None) -> DocclassCheckpoint:
    """Load ``path`` (CPU) as data (``weights_only`` unless ``trust``) and check that it is a docclass
    checkpoint; ``trust_flag`` is the option the refusal names (None: the command has none)."""
    from kitaeru.core.checkpoints import load_checkpoint

    path = Path(path)
    raw = load_checkpoint(path, trust=trust, trust_flag=trust_flag)
    if not isinstance(raw, dict) or CHECKPOINT_KEY not in raw or "state_dict" not in raw:
        raise DataError(f"{path}: not a docclass checkpoint (no '{CHECKPOINT_KEY}' section)")
    stored = dict(raw[CHECKPOINT_KEY])
    try:
        config = DocclassConfig.model_validate(stored["config"])
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: the config stored in the checkpoint is not valid ({str(exc).splitlines()[0]})") from exc
    stored["epoch"] = int(raw.get("epoch", -1)) + 1
    weights = {k[len(NET_PREFIX):]: v for k, v in raw["state_dict"].items() if k.startswith(NET_PREFIX)}
    return DocclassCheckpoint(path=path, config=config, info=stored, state_dict=weights)


def _field(config: DocclassConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def config_differences(old: DocclassConfig, new: DocclassConfig) -> list[str]:
    """``"model.backbone 'a' vs 'b'"`` for each field that makes ``new``'s network differ from ``old``'s."""
    fields = (*ARCHITECTURE_FIELDS, "data.image_size")
    return [f"{name} {_field(old, name)!r} vs {_field(new, name)!r}" for name in fields if _field(old, name) != _field(new, name)]


def check_compatible(checkpoint: DocclassCheckpoint, config: DocclassConfig) -> None:
    """Refuse ``config`` when the checkpoint's network was built or trained differently."""
    differences = config_differences(checkpoint.config, config)
    if differences:
        raise ConfigError(
            f"{checkpoint.path}: checkpoint of another config ('{checkpoint.config.name}', not '{config.name}'): "
            + "; ".join(differences)
        )


def load_network(checkpoint: DocclassCheckpoint):
    """The trained :class:`~kitaeru.recipes.docclass.model.DocClassNet` (eval mode, CPU)."""
    from .model import create_network

    # The weights come from the checkpoint: never fetch pretrained ones for this.
    net = create_network(checkpoint.config, pretrained="none")
    try:
        net.load_state_dict(checkpoint.state_dict)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"{checkpoint.path}: weights do not fit the network of its config ({first[:200]})") from exc
    return net.eval()
