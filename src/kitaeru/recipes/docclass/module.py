"""The Lightning module of the document classifier: network, margin loss, LR schedule, metrics.

The network (:class:`~kitaeru.recipes.docclass.model.DocClassNet`) is the inference branch; the margin
loss (CosFace or ArcFace from pytorch-metric-learning) holds one weight vector per class and is
dropped at export. Validation features are collected per epoch and scored over all pairs
(:func:`~kitaeru.recipes.docclass.metrics.pairwise_roc`); the threshold at ``threshold_fpr`` travels
in every checkpoint as the classifier's ``unknown`` threshold.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch

from .model import DocClassNet, create_network

from .checkpoint import CHECKPOINT_KEY
from .config import DocclassConfig, LossSection
from .metrics import FPR_TARGETS, fpr_key, pairwise_roc


def create_margin_loss(loss: LossSection, num_classes: int, embedding_dim: int) -> torch.nn.Module:
    """CosFace (cosine margin) or ArcFace (angular margin, degrees) with its own class weights."""
    from pytorch_metric_learning import losses

    if loss.name == "cosface":
        return losses.CosFaceLoss(num_classes=num_classes, embedding_size=embedding_dim, margin=loss.margin, scale=loss.scale)
    return losses.ArcFaceLoss(num_classes=num_classes, embedding_size=embedding_dim, margin=loss.margin, scale=loss.scale)


def warmup_poly_factor(step: int, warmup_steps: int, total_steps: int, power: float) -> float:
    """LR multiplier: linear warm-up to 1, then polynomial decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / remaining)
    return max(0.0, 1.0 - progress) ** power


class DocClassModule(L.LightningModule):
    """Trains ``net`` with a margin loss over ``num_classes`` template orientations."""

    def __init__(self, config: DocclassConfig, num_classes: int, meta: dict[str, Any], net: DocClassNet | None = None):
        super().__init__()
        self.config = config
        self.meta = dict(meta)
        self.net = net if net is not None else create_network(config)
        self.loss_fn = create_margin_loss(config.loss, num_classes, config.model.embedding_dim)
        self.val_metrics: dict[str, float] = {}
        self._val_features: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._loss_sum: torch.Tensor | float = 0.0
        self._loss_count = 0
        self.channels_last = False  # set on CUDA, where convolutions run faster in NHWC

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(img)

    # ---- training --------------------------------------------------------------------------
    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_count = 0.0, 0

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = self.loss_fn(self.net(self._prepare(images)), labels)
        # Summed on the device: no host sync per step.
        self._loss_sum = self._loss_sum + loss.detach() * len(labels)
        self._loss_count += len(labels)
        self.log("train_loss_step", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    # ---- validation ------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_features, self._val_labels = [], []

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        self._val_features.append(self.net(self._prepare(images)).float().cpu())
        self._val_labels.append(labels.cpu())

    def on_validation_epoch_end(self) -> None:
        # Logged here; kitaeru's EvidenceCallback reads them at the end of the training epoch.
        if self.trainer.sanity_checking or not self._val_features:
            return
        for key, value in self.epoch_metrics().items():
            self.log(key, float(value), prog_bar=key in ("val_auroc", "train_loss"), sync_dist=False)

    def epoch_metrics(self) -> dict[str, float]:
        """Pairwise-ROC metrics of this epoch's validation features (+ the epoch's mean train loss)."""
        features, labels = self._validation_set()
        roc = pairwise_roc(features, labels, threshold_fpr=self.config.train.threshold_fpr)
        metrics = {"val_auroc": roc["auroc"]}
        for target in FPR_TARGETS:
            metrics[f"val_tpr_{fpr_key(target)}"] = roc[f"tpr_{fpr_key(target)}"]
        metrics["val_threshold"] = roc["threshold"]
        loss_sum, loss_count = self._loss_totals()
        if loss_count:
            metrics["train_loss"] = loss_sum / loss_count
        self.val_metrics = metrics
        return metrics

    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _validation_set(self):
        """This epoch's validation features and labels, in dataset order; with several processes the
        shards are all-gathered (and the sampler's padding dropped) so the metric is the one of one device."""
        features, labels = torch.cat(self._val_features), torch.cat(self._val_labels)
        if not self._distributed():
            return features.numpy(), labels.numpy()
        gathered_features = self.all_gather(features.to(self.device))  # (world, per rank, dim)
        gathered_labels = self.all_gather(labels.to(self.device))
        total = len(self.trainer.val_dataloaders.dataset)
        # the distributed sampler (no shuffle) deals item i to rank i % world: interleave back
        features = gathered_features.transpose(0, 1).reshape(-1, gathered_features.shape[-1])[:total]
        labels = gathered_labels.transpose(0, 1).reshape(-1)[:total]
        return features.float().cpu().numpy(), labels.cpu().numpy()

    def _loss_totals(self) -> tuple[float, int]:
        total, count = float(self._loss_sum), self._loss_count
        if self._distributed():
            both = self.all_gather(torch.tensor([total, float(count)], device=self.device)).reshape(-1, 2).sum(0)
            total, count = float(both[0]), int(both[1])
        return total, count

    # ---- optimiser -------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.config.optim
        optimizer = torch.optim.AdamW(
            [
                {"params": self.net.parameters(), "lr": o.learning_rate},
                {"params": self.loss_fn.parameters(), "lr": o.learning_rate * o.loss_lr_scale},
            ],
            lr=o.learning_rate,
            weight_decay=o.weight_decay,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = max(1, math.ceil(total / max(1, self.trainer.max_epochs or 1)))
        warmup = int(round(o.warmup_epochs * per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_poly_factor(step, warmup, total, o.power)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoint contents ---------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            **self.meta,
            "config": self.config.model_dump(mode="json"),
            "val_metrics": dict(self.val_metrics),
            "unknown_threshold": self.val_metrics.get("val_threshold"),
            "threshold_fpr": self.config.train.threshold_fpr,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY) or {}
        self.val_metrics = dict(stored.get("val_metrics") or {})


def embed_batches(net: torch.nn.Module, loader, device: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of every batch of ``loader`` (eval mode, inference mode)."""
    was_training = net.training
    net.eval()
    features, labels = [], []
    with torch.inference_mode():
        for images, targets in loader:
            features.append(net(images.to(device)).float().cpu().numpy())
            labels.append(np.asarray(targets))
    net.train(was_training)
    return np.concatenate(features), np.concatenate(labels)
