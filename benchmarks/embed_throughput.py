"""Image embedding throughput: the plain loop vs ``kitaeru embed`` on 1600×900 JPEGs, same model.

* plain: one process, PIL full decode → torchvision Resize + CenterCrop + ToTensor + Normalize →
  the model, batch by batch under ``torch.no_grad``.
* kitaeru: the ``embed`` pipeline (parallel decode workers, JPEG draft decoding at reduced scale,
  inference_mode, pinned memory and bf16 + channels-last on GPU, shards written to Parquet).

Both use the same encoder weights and batch size; model creation is not timed. Images are
generated (nuScenes-sized camera frames); the last line is kitaeru's images/s over the plain loop's.

    python benchmarks/embed_throughput.py                               # 48 images, timm ViT-Tiny, CPU
    python benchmarks/embed_throughput.py --n 2000 --model vit_l_14 --pretrained none --device cuda
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def make_camera_frames(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 1600×900 JPEGs with smooth structure and fine texture (realistic JPEG sizes)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 255, size=(9, 16, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((1600, 900), Image.BICUBIC), dtype=np.int16)
        texture = rng.integers(-24, 24, size=(900, 1600, 1), dtype=np.int16)
        frame = np.clip(base + texture, 0, 255).astype(np.uint8)
        path = folder / f"CAM_FRONT_{i:05d}.jpg"
        Image.fromarray(frame).save(path, quality=90)
        paths.append(path)
    return paths


def plain_loop(paths: list[Path], encoder, batch_size: int) -> float:
    """images/s of the straightforward loop with the same model."""
    import torch
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize(encoder.image_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(encoder.image_size),
        transforms.ToTensor(),
        transforms.Normalize(encoder.mean, encoder.std),
    ])
    device = torch.device(encoder.device)
    with torch.no_grad():  # warm-up outside the timing (first-call allocations, kernel selection)
        encoder.forward(torch.zeros(batch_size, 3, encoder.image_size, encoder.image_size, device=device))
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            batch = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths[i: i + batch_size]])
            encoder.forward(batch.to(device)).float().cpu()
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=48, help="generated 1600x900 JPEGs (default 48)")
    parser.add_argument("--model", default="timm:vit_tiny_patch16_224", help="encoder for both paths")
    parser.add_argument("--pretrained", default="none", help="weights (default none = seeded random init)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=None, help="kitaeru decode workers (default: CPUs - 1)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.environ.setdefault("KITAERU_NO_PROGRESS", "1")

    from kitaeru.core.device import resolve_device
    from kitaeru.recipes.embed.config import EmbedConfig
    from kitaeru.recipes.embed.pipeline import build_encoder, run_embed

    with tempfile.TemporaryDirectory(prefix="kitaeru-bench-") as tmp:
        folder = Path(tmp) / "frames"
        folder.mkdir()
        start = time.perf_counter()
        paths = make_camera_frames(folder, args.n)
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        print(f"data: {args.n} generated 1600x900 JPEGs ({size_mb:.1f} MB, {time.perf_counter() - start:.1f}s to write)")
        cfg = EmbedConfig(image_dir=str(folder), out=str(Path(tmp) / "e.parquet"), model=args.model,
                          pretrained=args.pretrained, image_size=args.image_size, batch_size=args.batch_size,
                          workers=args.workers, device=args.device)
        device = resolve_device(args.device).device
        encoder = build_encoder(cfg, device)
        print(f"model: {args.model} (weights {encoder.pretrained}, {encoder.image_size}px, dim {encoder.dim}) on {device}, "
              f"batch {args.batch_size}")
        plain = plain_loop(paths, encoder, args.batch_size)
        print(f"plain loop (PIL full decode + torchvision resize, one process): {plain:.2f} images/s")
        summary = run_embed(cfg)
        ours = summary["items_per_second"]
        print(f"kitaeru embed (decode workers: {summary['workers']}, draft decoding): {ours:.2f} images/s "
              f"({summary['embedded']} embedded)")
        print(f"ratio (kitaeru embed / plain loop, images/s): {ours / plain:.2f}x")


if __name__ == "__main__":
    main()
