"""A Lightning callback that writes kitaeru's run evidence, for recipes that train with Lightning.

Lightning already does checkpointing, AMP, DDP, TensorBoard and progress; this callback only adds
our ``results.csv`` row per epoch (with the epoch's wall time and learning rate) so every recipe
leaves the same evidence whichever engine trained it.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from .run import RunFolder


class EvidenceCallback(L.Callback):
    """At the end of each training epoch, append ``callback_metrics`` + seconds + lr to ``results.csv``.

    Why ``on_train_epoch_end``: by then Lightning has run this epoch's validation and reduced the
    epoch-level training metrics (``epoch_end_reached``), so the row holds the epoch's own numbers.
    Callbacks' ``on_validation_epoch_end`` runs *before* the module's, so a metric the module
    computes there (AUROC over all validation features, say) would be one epoch stale.
    """

    def __init__(self, run: RunFolder, *, log_tensorboard: bool = False):
        # Lightning's own TensorBoardLogger usually writes the scalars; avoid writing them twice.
        self.run = run
        self.log_tensorboard = log_tensorboard
        self._epoch_start = time.time()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.time()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch + 1, "seconds": round(time.time() - self._epoch_start, 3)}
        for key, value in trainer.callback_metrics.items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                continue
        optimizers = trainer.optimizers
        if optimizers:
            row["lr"] = float(optimizers[0].param_groups[0]["lr"])
        if self.log_tensorboard:
            self.run.log_epoch(row)
        else:
            enabled, self.run.tensorboard_enabled = self.run.tensorboard_enabled, False
            try:
                self.run.log_epoch(row)
            finally:
                self.run.tensorboard_enabled = enabled
