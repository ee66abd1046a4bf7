"""Build model: projectors (+ time-series encoder) trained with a multi-positive CLIP loss, as a
LightningModule over cached frozen features, and the retrieval metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from kitaeru.models.projectors import (
    LogitScale,
    TimeSeriesEncoder,
    create_projector,
    fuse_scene,
    multi_positive_clip_loss,
)

RECALL_KS = (1, 5, 10)
METRIC_KEYS = tuple(f"{d}_R@{k}" for d in ("t2i", "i2t") for k in RECALL_KS)


# ---- metrics -------------------------------------------------------------------------------------
def retrieval_recall(text: np.ndarray, scene: np.ndarray, owner: np.ndarray, ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Recall@k both ways. Text→image: each caption finds its scene among all scenes. Image→text:
    a scene is found when any of its captions ranks within the top k of all captions."""
    text = torch.nn.functional.normalize(torch.as_tensor(text, dtype=torch.float32), dim=-1)
    scene = torch.nn.functional.normalize(torch.as_tensor(scene, dtype=torch.float32), dim=-1)
    owner_t = torch.as_tensor(owner, dtype=torch.long)
    sim = text @ scene.t()  # (C, N)
    target = sim.gather(1, owner_t[:, None])
    rank_t2i = (sim > target).sum(dim=1)
    per_scene = sim.t()  # (N, C)
    positive = owner_t[None, :] == torch.arange(scene.shape[0])[:, None]
    best_positive = per_scene.masked_fill(~positive, float("-inf")).max(dim=1, keepdim=True).values
    has_caption = positive.any(dim=1)
    rank_i2t = (per_scene > best_positive).sum(dim=1)[has_caption]
    out: dict[str, float] = {}
    for k in ks:
        out[f"t2i_R@{k}"] = float((rank_t2i < k).float().mean())
    for k in ks:
        out[f"i2t_R@{k}"] = float((rank_i2t < k).float().mean()) if len(rank_i2t) else 0.0
    out["recall_mean"] = float(np.mean([out[m] for m in out]))
    return out


def recall_by_direction(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{"text_to_image": {"R@1": ..}, "image_to_text": {..}}`` from flat metric keys."""
    return {
        name: {f"R@{k}": round(float(metrics[f"{short}_R@{k}"]), 4) for k in RECALL_KS}
        for name, short in (("text_to_image", "t2i"), ("image_to_text", "i2t"))
    }


# ---- features held on the module's device ------------------------------------------------------------
@dataclass
class FeatureTensors:
    """One split's frozen features: captions ``text`` with their ``owner`` scene row, ``image`` and
    optional ``series``; ``captions_of[i]`` lists the caption rows of scene ``i``."""

    text: torch.Tensor
    owner: torch.Tensor
    image: torch.Tensor
    series: torch.Tensor | None
    captions_of: list[list[int]]

    @classmethod
    def build(cls, text: np.ndarray, owner: np.ndarray, image: np.ndarray, series: np.ndarray | None) -> "FeatureTensors":
        captions_of: list[list[int]] = [[] for _ in range(len(image))]
        for row, scene in enumerate(owner.tolist()):
            captions_of[scene].append(row)
        return cls(
            text=torch.from_numpy(np.ascontiguousarray(text, dtype=np.float32)),
            owner=torch.from_numpy(np.asarray(owner, dtype=np.int64)),
            image=torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            series=None if series is None else torch.from_numpy(np.ascontiguousarray(series, dtype=np.float32)),
            captions_of=captions_of,
        )

    def to(self, device: torch.device) -> "FeatureTensors":
        return FeatureTensors(self.text.to(device), self.owner.to(device), self.image.to(device),
                              None if self.series is None else self.series.to(device), self.captions_of)

    def collate(self, scenes: list[int]) -> dict[str, torch.Tensor]:
        """A batch of scene rows → scene rows, their caption rows and each caption's batch position."""
        captions, owner = [], []
        for position, scene in enumerate(scenes):
            rows = self.captions_of[scene]
            captions.extend(rows)
            owner.extend([position] * len(rows))
        return {"scenes": torch.tensor(scenes, dtype=torch.long), "captions": torch.tensor(captions, dtype=torch.long),
                "owner": torch.tensor(owner, dtype=torch.long)}


# ---- the module ----------------------------------------------------------------------------------------
class SceneSearchModel(L.LightningModule):
    """Text projector, image projector, optional time-series encoder and the learnable temperature.

    With a time series the scene side is image + series; a second loss term keeps the image
    projection alone aligned with the text, so image-only queries still land near their scenes.
    """

    def __init__(
        self,
        text_dim: int,
        image_dim: int,
        embed_dim: int = 256,
        series_dim: int = 0,
        temperature: float = 0.07,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.text_projector = create_projector(text_dim, embed_dim)
        self.image_projector = create_projector(image_dim, embed_dim)
        self.series_encoder = TimeSeriesEncoder(series_dim, embed_dim) if series_dim else None
        self.logit_scale = LogitScale(temperature)
        self.train_features: FeatureTensors | None = None
        self.val_features: FeatureTensors | None = None
        self.val_metrics: dict[str, float] = {}
        self.step_losses: list[float] = []  # this epoch's, read by the evidence callback

    # ---- embeddings ----
    def embed_text(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_projector(features), dim=-1)

    def embed_scene(self, image: torch.Tensor, series: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scene side, image-only)`` embeddings, both L2-normalised."""
        projected = self.image_projector(image)
        series_emb = self.series_encoder(series) if self.series_encoder is not None and series is not None else None
        return F.normalize(fuse_scene(projected, series_emb), dim=-1), F.normalize(projected, dim=-1)

    def contrastive_loss(self, feats: FeatureTensors, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The multi-positive InfoNCE of one batch (``FeatureTensors.collate`` output) of ``feats``."""
        scenes, captions, owner = batch["scenes"], batch["captions"], batch["owner"]
        text = self.embed_text(feats.text[captions])
        series = feats.series[scenes] if feats.series is not None else None
        scene, image_only = self.embed_scene(feats.image[scenes], series)
        scale = self.logit_scale()
        loss = multi_positive_clip_loss(text, scene, owner, scale)
        if self.series_encoder is not None:
            loss = 0.5 * (loss + multi_positive_clip_loss(text, image_only, owner, scale))
        return loss

    # ---- lightning hooks ----
    def on_fit_start(self) -> None:
        self.train_features = self.train_features.to(self.device)
        self.val_features = self.val_features.to(self.device)

    def on_train_epoch_start(self) -> None:
        self.step_losses = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.contrastive_loss(self.train_features, batch)
        self.step_losses.append(float(loss.detach()))
        self.log("train_loss", loss, prog_bar=True, batch_size=len(batch["scenes"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        feats = self.val_features
        loss = self.contrastive_loss(feats, batch)
        recall = self.recall_across_ranks(feats) if self.trainer.world_size > 1 else self.recall(feats)
        self.val_metrics = {"val_loss": float(loss), **recall}
        for key, value in self.val_metrics.items():
            self.log(key, value, prog_bar=key in ("t2i_R@5", "i2t_R@5"), batch_size=len(batch["scenes"]))

    @torch.no_grad()
    def recall(self, feats: FeatureTensors) -> dict[str, float]:
        text = self.embed_text(feats.text)
        scene, _ = self.embed_scene(feats.image, feats.series)
        # .float(): under bf16 autocast the embeddings are bfloat16, which numpy cannot hold
        return retrieval_recall(text.float().cpu().numpy(), scene.float().cpu().numpy(), feats.owner.cpu().numpy())

    @torch.no_grad()
    def recall_across_ranks(self, feats: FeatureTensors) -> dict[str, float]:
        """The same recall as :meth:`recall`, with the embedding shared out: each rank embeds its own
        slice of the captions and scenes, the slices are all-gathered, and every rank scores all of
        them, so the metric over several devices is the metric of one."""
        rank, world = self.trainer.global_rank, self.trainer.world_size

        def gathered(rows: torch.Tensor, embed) -> torch.Tensor:
            total = len(rows)
            chunk = -(-total // world)
            mine = rows[rank * chunk:(rank + 1) * chunk]
            out = embed(mine) if len(mine) else None
            dim = self.hparams.embed_dim
            padded = torch.zeros(chunk, dim, device=self.device)
            if out is not None:
                padded[:len(out)] = out.float()
            every = self.all_gather(padded)  # (world, chunk, dim)
            return every.reshape(world * chunk, dim)[:total]

        def scene_rows(rows: torch.Tensor) -> torch.Tensor:
            series = feats.series[rows] if feats.series is not None else None
            return self.embed_scene(feats.image[rows], series)[0]

        text = gathered(torch.arange(len(feats.text), device=self.device), lambda r: self.embed_text(feats.text[r]))
        scene = gathered(torch.arange(len(feats.image), device=self.device), scene_rows)
        return retrieval_recall(text.cpu().numpy(), scene.cpu().numpy(), feats.owner.cpu().numpy())

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay)
