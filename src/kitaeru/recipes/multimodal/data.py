"""Build data: the scene source (folder, nuScenes, generated samples) and the split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kitaeru.core.errors import ConfigError
from kitaeru.data.scenes import SceneSet

from .config import MultimodalConfig

SAMPLE_DIR = "sample_data"


def load_scenes(config: MultimodalConfig, output_dir: Path) -> SceneSet:
    """The scenes of the configured source (``--limit`` applied)."""
    if config.use_sample_data:
        from kitaeru.data.sample_scenes import write_sample_scenes
        from kitaeru.data.scenes import load_scene_folder

        folder = write_sample_scenes(output_dir / SAMPLE_DIR, config.sample_scenes, seed=0, timeseries=True)
        return load_scene_folder(folder, limit=config.limit)
    if config.nuscenes_path:
        from kitaeru.data.nuscenes import load_nuscenes

        return load_nuscenes(
            config.nuscenes_path, version=config.nuscenes_version, limit=config.limit, use_devkit=config.use_devkit,
            include_timeseries=config.include_timeseries, steps=config.timeseries_steps,
        )
    from kitaeru.data.scenes import load_scene_folder

    return load_scene_folder(config.data_dir, limit=config.limit)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random ``(train, val)`` split of ``range(n)``; both sides get at least one scene."""
    if n < 2:
        raise ConfigError(f"training needs at least 2 readable scenes (a training and a validation one); found {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    n_val = min(max(n_val, 1), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
