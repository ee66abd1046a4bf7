"""Ultralytics' detection trainer with kitaeru's optimizer groups (layer-wise LR decay).

The class lives at module level (not inside a function) so Ultralytics' multi-GPU launcher can
import it by name in its worker processes; the decay rate travels in an environment variable for
the same reason (a custom training argument would be rejected by Ultralytics' config check).
Importing this module imports Ultralytics: only the training path does.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from ultralytics.models.yolo.detect import DetectionTrainer

from .llrd import apply_llrd

LLRD_ENV = "KITAERU_LLRD_DECAY"


class KitaeruDetectionTrainer(DetectionTrainer):
    """A ``DetectionTrainer`` whose optimizer groups are split by depth when LLRD is on."""

    def build_optimizer(self, model, *args, **kwargs):
        optimizer = super().build_optimizer(model, *args, **kwargs)
        decay = os.environ.get(LLRD_ENV)
        if decay:
            apply_llrd(optimizer, model, float(decay))
        return optimizer


@contextlib.contextmanager
def llrd_setting(decay: float | None) -> Iterator[None]:
    """Set (or clear) the LLRD decay for trainers built inside the block, restoring it afterwards."""
    previous = os.environ.get(LLRD_ENV)
    if decay is None:
        os.environ.pop(LLRD_ENV, None)
    else:
        os.environ[LLRD_ENV] = repr(float(decay))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(LLRD_ENV, None)
        else:
            os.environ[LLRD_ENV] = previous
