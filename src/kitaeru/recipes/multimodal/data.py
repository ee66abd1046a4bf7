"""Build data: the scene source (folder, nuScenes, generated samples) and the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kitaeru.core.errors import ConfigError
from kitaeru.data.scenes import SceneSet

from .config import MultimodalConfig

SAMPLE_DIR = "sample_data"
IMAGE_FAMILIES = ("torchvision", "timm", "open_clip")

# The scenes read by :func:`check_inputs` before the run folder opened, handed to :func:`load_scenes`
# so a large nuScenes table is parsed once per run: ``(source key, SceneSet)``.
_checked: list[tuple[tuple, SceneSet]] = []


def _source_key(config: MultimodalConfig) -> tuple:
    return (config.data_dir, config.nuscenes_path, config.nuscenes_version, config.use_devkit, config.limit,
            config.include_timeseries, config.timeseries_steps)


def _read_source(config: MultimodalConfig) -> SceneSet:
    if config.nuscenes_path:
        from .nuscenes import load_nuscenes

        return load_nuscenes(
            config.nuscenes_path, version=config.nuscenes_version, limit=config.limit, use_devkit=config.use_devkit,
            include_timeseries=config.include_timeseries, steps=config.timeseries_steps,
        )
    from kitaeru.data.scenes import load_scene_folder

    return load_scene_folder(config.data_dir, limit=config.limit)


def check_image_encoder_name(name: str, flag: str = "--image-encoder") -> None:
    """An image encoder name names a known family, and (for OpenCLIP, whose model list is a folder of
    JSON files) a known architecture: checked from files, without importing torch or the library."""
    import importlib.util
    import os

    text = name.strip()
    if not text or os.path.exists(text) or ":" not in text:
        return  # a bare name means OpenCLIP or an alias such as vit_l_14: the library decides
    family, arch = text.split(":", 1)
    family = family.replace("-", "_").lower()
    family = "open_clip" if family in ("openclip", "open_clip_torch") else family
    if family not in IMAGE_FAMILIES:
        raise ConfigError(f"{flag} {name}: unknown family '{family}' (use torchvision:, timm: or open_clip:)")
    if not arch.split("/", 1)[0]:
        raise ConfigError(f"{flag} {name}: missing architecture name")
    spec = importlib.util.find_spec(family) if family == "open_clip" else None
    configs = [Path(p) / "model_configs" for p in (spec.submodule_search_locations or [])] if spec else []
    if configs and configs[0].is_dir() and not (configs[0] / f"{arch.split('/', 1)[0]}.json").is_file():
        raise ConfigError(f"{flag} {name}: unknown OpenCLIP model '{arch.split('/', 1)[0]}'")


def check_image_encoder_listed(name: str, flag: str = "--image-encoder") -> None:
    """A torchvision or timm architecture is in its library's list (importing the library, which
    imports torch, but building no model): the last check before the run folder opens."""
    family, _, arch = name.strip().partition(":")
    family = family.replace("-", "_").lower()
    if family == "torchvision":
        import torchvision

        known = arch in torchvision.models.list_models()
    elif family == "timm":
        import timm

        known = bool(timm.list_models(arch)) or timm.is_model(arch)
    else:
        return
    if not known:
        raise ConfigError(f"{flag} {name}: unknown {family} model '{arch}'")


def check_inputs(config: MultimodalConfig) -> None:
    """Every check of a training run's inputs that needs no model, before the run folder opens:
    first what needs no library (the encoder names' form, the whole scene source: metadata structure,
    paths that leave the folder, duplicate ids, unreadable nuScenes tables), then the architecture
    names against torchvision's / timm's lists."""
    check_image_encoder_name(config.image_encoder)
    if not (config.use_sample_data or config.skip_training or not (config.data_dir or config.nuscenes_path)):
        _checked[:] = [(_source_key(config), _read_source(config))]
    if not config.skip_training:
        check_image_encoder_listed(config.image_encoder)


def load_scenes(config: MultimodalConfig, output_dir: Path) -> SceneSet:
    """The scenes of the configured source (``--limit`` applied)."""
    if _checked and _checked[0][0] == _source_key(config):
        return _checked.pop()[1]
    if config.use_sample_data:
        from kitaeru.data.scenes import load_scene_folder

        from .sample_scenes import write_sample_scenes

        folder = write_sample_scenes(output_dir / SAMPLE_DIR, config.sample_scenes, seed=0, timeseries=True)
        return load_scene_folder(folder, limit=config.limit)
    return _read_source(config)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random ``(train, val)`` split of ``range(n)``; both sides get at least one scene."""
    if n < 2:
        raise ConfigError(f"training needs at least 2 readable scenes (a training and a validation one); found {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
