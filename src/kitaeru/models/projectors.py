"""The trained parts of the scene-search model: linear projectors, a time-series encoder, the loss.

* Text and image projectors are plain ``nn.Linear`` layers from a frozen encoder's feature size to
  the joint space (the original's 384→256 and 576→256), so their state dicts are
  ``{"weight", "bias"}`` and load with ``torch.load(weights_only=True)`` into ``nn.Linear``.
* :class:`TimeSeriesEncoder`: a 2-layer LSTM over the normalised ``(T, D)`` series (hidden 128, as the
  original defined but never used) whose last hidden state is projected to the joint space and
  added to the image projection on the scene side (:func:`fuse_scene`).
* :func:`multi_positive_clip_loss`: symmetric InfoNCE on L2-normalised embeddings where several
  captions of one image are all positives of that image — no caption is treated as a negative of
  its own image because another caption of it sits in the same batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INITIAL_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0


def create_projector(in_dim: int, out_dim: int) -> nn.Linear:
    """A linear projector ``in_dim → out_dim`` (its state dict is ``{"weight", "bias"}``)."""
    return nn.Linear(in_dim, out_dim)


class TimeSeriesEncoder(nn.Module):
    """LSTM encoder of a ``(B, T, D)`` series → ``(B, embed_dim)``, with per-feature normalisation
    statistics stored as buffers so the state dict is self-contained."""

    def __init__(self, in_dim: int, embed_dim: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.in_dim, self.embed_dim, self.hidden, self.layers = in_dim, embed_dim, hidden, layers
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, embed_dim)

    @torch.no_grad()
    def set_normalisation(self, series: torch.Tensor) -> None:
        """Per-feature mean/std from training series ``(N, T, D)`` (constant features get std 1)."""
        flat = series.reshape(-1, series.shape[-1]).float()
        self.mean.copy_(flat.mean(dim=0))
        std = flat.std(dim=0)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, series: torch.Tensor) -> torch.Tensor:
        x = (series.float() - self.mean) / self.std
        _, (h, _) = self.lstm(x)
        return self.head(h[-1])


def fuse_scene(image_embedding: torch.Tensor, series_embedding: torch.Tensor | None) -> torch.Tensor:
    """The scene side: image projection plus the time-series embedding when there is one."""
    return image_embedding if series_embedding is None else image_embedding + series_embedding


class LogitScale(nn.Module):
    """Learnable inverse temperature, stored as a log and clamped at 100 as in CLIP."""

    def __init__(self, temperature: float = INITIAL_TEMPERATURE):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)


def multi_positive_clip_loss(
    text: torch.Tensor, scene: torch.Tensor, owner: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE. ``text`` ``(C, D)`` captions, ``scene`` ``(B, D)``, ``owner`` ``(C,)`` the row
    of ``scene`` each caption describes. Text→scene: cross-entropy towards the caption's scene.
    Scene→text: every caption of the scene is a positive (log of the summed positive probability)."""
    text = F.normalize(text, dim=-1)
    scene = F.normalize(scene, dim=-1)
    logits = logit_scale * text @ scene.t()  # (C, B)
    text_to_scene = F.cross_entropy(logits, owner)
    per_scene = logits.t()  # (B, C)
    positive = owner.unsqueeze(0) == torch.arange(scene.shape[0], device=scene.device).unsqueeze(1)
    pos_logits = per_scene.masked_fill(~positive, float("-inf"))
    has_caption = positive.any(dim=1)
    scene_to_text = -(torch.logsumexp(pos_logits, dim=1) - torch.logsumexp(per_scene, dim=1))[has_caption].mean()
    return 0.5 * (text_to_scene + scene_to_text)
