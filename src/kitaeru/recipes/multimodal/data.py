"""Build data: cloud defaults, the scene source (folder, nuScenes, generated samples), the split."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from kitaeru.core.errors import ConfigError
from kitaeru.data.scenes import SceneSet

from .config import COLAB_OUTPUT, DEFAULT_OUTPUT, MultimodalConfig, check_source_given

SAMPLE_DIR = "sample_data"


def apply_cloud_defaults(config: MultimodalConfig) -> MultimodalConfig:
    """Fill the data source and output folder that ``--cloud`` implies when they were not given.

    sagemaker: data from ``$SM_CHANNEL_TRAINING``, outputs to ``$SM_MODEL_DIR``;
    colab: outputs to ``/content/output``; local: outputs to ``runs/multimodal``.
    """
    updates: dict = {}
    if config.cloud == "sagemaker":
        if not (config.data_dir or config.nuscenes_path or config.use_sample_data):
            channel = os.environ.get("SM_CHANNEL_TRAINING")
            if not channel:
                raise ConfigError("--cloud sagemaker: SM_CHANNEL_TRAINING is not set; give --data-dir (or --use-sample-data)")
            updates["data_dir"] = channel
        if not config.output_dir:
            model_dir = os.environ.get("SM_MODEL_DIR")
            if not model_dir:
                raise ConfigError("--cloud sagemaker: SM_MODEL_DIR is not set; give --output-dir")
            updates["output_dir"] = model_dir
    elif not config.output_dir:
        updates["output_dir"] = COLAB_OUTPUT if config.cloud == "colab" else DEFAULT_OUTPUT
    config = config.model_copy(update=updates)
    check_source_given(config)
    return config


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
