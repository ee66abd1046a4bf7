"""Ultralytics' detection trainer with kitaeru's optimizer groups (layer-wise LR decay).

The decay reaches the trainer through Ultralytics' own callback API, not a side channel: the
:class:`LlrdCallback` registered with ``YOLO.add_callback`` carries the rate, the trainer finds it
among its callbacks when it builds its optimizer (callbacks are handed to every trainer Ultralytics
creates, and pickled into its multi-GPU workers), and the same callback records the resulting
groups once training is set up. The class lives at module level so those workers can import it.
Importing this module imports Ultralytics: only the training path does.
"""

from __future__ import annotations

from typing import Any

from ultralytics.models.yolo.detect import DetectionTrainer

from .llrd import apply_llrd, summarize_groups

LLRD_EVENT = "on_pretrain_routine_end"


class LlrdCallback:
    """Carries the LLRD rate to :class:`KitaeruDetectionTrainer`; records the groups it built."""

    def __init__(self, decay: float):
        self.decay = float(decay)
        self.groups: list[dict[str, Any]] | None = None

    def __call__(self, trainer) -> None:
        self.groups = summarize_groups(trainer.optimizer)


def llrd_callback_of(trainer) -> LlrdCallback | None:
    return next((c for c in trainer.callbacks.get(LLRD_EVENT, []) if isinstance(c, LlrdCallback)), None)


class KitaeruDetectionTrainer(DetectionTrainer):
    """A ``DetectionTrainer`` whose optimizer groups are split by depth when an :class:`LlrdCallback` is registered."""

    def build_optimizer(self, model, *args, **kwargs):
        optimizer = super().build_optimizer(model, *args, **kwargs)
        llrd = llrd_callback_of(self)
        if llrd is not None:
            apply_llrd(optimizer, model, llrd.decay)
        return optimizer
