"""The frozen work done once: every image's VAE latent distribution and every caption's text embedding.

Cached on disk under a key that hashes everything the tensors depend on (model files, image files,
captions, resolution, crop/flip settings, dtype), so a second run on the same data starts at once
and a changed input never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from .config import TrainConfig
from .data import TrainItem
from .images import load_rgb, square, to_pixels


def _files_signature(folder: Path) -> list:
    if not folder.is_dir():
        return []
    return [(str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()]


def cache_key(config: TrainConfig, items: list[TrainItem], resolution: int, dtype: str) -> str:
    """A hash of everything the cached tensors depend on: model, data, preprocessing."""
    pretrained = str(config.pretrained_model)
    local = Path(pretrained).expanduser()
    model = ([str(local.resolve())] + [_files_signature(local / sub) for sub in ("vae", "text_encoder", "tokenizer")]
             if local.is_dir() else [pretrained])
    data = [(str(i.path.resolve()), i.path.stat().st_size, i.path.stat().st_mtime_ns, i.captions) for i in items]
    settings = [resolution, config.center_crop, config.pad, config.random_flip, config.seed, dtype]
    text = json.dumps([model, data, settings], default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@dataclass
class Encoded:
    """Cached frozen work: latent distribution per image (and flip) and text embedding per caption."""

    mean: Any  # [N, F, C, h, w] (F = 2 with random flip: original and flipped)
    std: Any
    text: Any  # [U, tokens, dim]: one row per distinct caption
    caption_index: Any  # [N, K] -> rows of ``text``, -1 past an image's own K_i captions
    path: Optional[Path] = None
    hit: bool = False
    seconds: float = 0.0


def caption_table(items: list[TrainItem]) -> tuple[list[str], Any]:
    """(distinct captions, [N, K] index of each image's captions, -1 padded)."""
    import torch

    captions = sorted({c for it in items for c in it.captions})
    where = {c: i for i, c in enumerate(captions)}
    width = max(len(it.captions) for it in items)
    index = torch.full((len(items), width), -1, dtype=torch.long)
    for n, it in enumerate(items):
        index[n, :len(it.captions)] = torch.tensor([where[c] for c in it.captions])
    return captions, index


def crop_fraction(seed: int, index: int) -> tuple[float, float]:
    """The fixed random crop of image ``index`` when latents are cached (one crop per image)."""
    import random

    rng = random.Random(seed * 1_000_003 + index)
    return rng.random(), rng.random()


def build_cache(config: TrainConfig, items: list[TrainItem], resolution: int, dtype: str,
                encode_pixels: Callable, encode_text: Callable) -> Encoded:
    """Load the cache of this model + data + resolution, or encode everything once and write it."""
    import torch
    from safetensors.torch import load_file, save_file

    from kitaeru.core.console import info

    key = cache_key(config, items, resolution, dtype)
    cache_dir = Path(config.cache_dir) if config.cache_dir else Path(config.output_dir) / ".latent_cache"
    path = cache_dir / f"lora-{key}.safetensors"
    started = time.time()
    if path.is_file():
        t = load_file(str(path))
        encoded = Encoded(t["mean"], t["std"], t["text"], t["caption_index"], path, True)
    else:
        flips = (False, True) if config.random_flip else (False,)
        means, stds = [], []
        batch = 8
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            squares = [square(load_rgb(it.path), resolution, center_crop=config.center_crop, pad=config.pad,
                              crop_fraction=crop_fraction(config.seed, start + j)) for j, it in enumerate(chunk)]
            per_flip = [encode_pixels(torch.stack([to_pixels(s, f) for s in squares])) for f in flips]
            means.append(torch.stack([m for m, _ in per_flip], dim=1).cpu())
            stds.append(torch.stack([s for _, s in per_flip], dim=1).cpu())
        captions, index = caption_table(items)
        text = torch.cat([encode_text(captions[i:i + 16]).float().cpu() for i in range(0, len(captions), 16)])
        encoded = Encoded(torch.cat(means), torch.cat(stds), text, index, path, False)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            save_file({"mean": encoded.mean.contiguous(), "std": encoded.std.contiguous(),
                       "text": encoded.text.contiguous(), "caption_index": index.contiguous()},
                      str(tmp), metadata={"key": key, "resolution": str(resolution)})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    encoded.seconds = round(time.time() - started, 3)
    info(f"latent cache {'hit' if encoded.hit else 'written'}: {path} ({len(items)} images, {encoded.seconds:.1f} s)")
    return encoded
