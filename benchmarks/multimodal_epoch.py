"""Per-epoch training time of the scene-search projectors: re-encoding every epoch vs cached features.

The original tool pushed every image and caption through the frozen encoders inside the training
loop, every epoch. kitaeru encodes them once (``kitaeru.recipes.multimodal.features``, cached on
disk) and trains the projectors on the stored features. Both ways here train the same
``SceneSearchModel`` with the same loss, optimizer, batches and frozen encoders (real MiniLM +
ImageNet MobileNetV2, loaded once and excluded from the timings) on generated sample scenes, in one
process. The one-off feature extraction is printed too, so the break-even epoch count is visible.
The last line is the per-epoch ratio.

    python benchmarks/multimodal_epoch.py                         # small defaults: ~1-2 minutes on 2 CPU cores
    python benchmarks/multimodal_epoch.py --scenes 320 --plain-epochs 3 --cached-epochs 30 --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KITAERU_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=96, help="generated scenes to train on")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--plain-epochs", type=int, default=2, help="epochs timed for the re-encoding way")
    parser.add_argument("--cached-epochs", type=int, default=10, help="epochs timed for the cached way")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="image-decoding threads (both ways)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from kitaeru.core.seed import seed_everything
    from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes
    from kitaeru.data.scenes import decode_images, load_scene_folder
    from kitaeru.recipes.multimodal.features import EncoderSpec, FrozenEncoders, extract_features
    from kitaeru.recipes.multimodal.model import FeatureTensors, SceneSearchModel

    with tempfile.TemporaryDirectory(prefix="kitaeru-bench-") as tmp:
        folder = write_sample_scenes(Path(tmp) / "scenes", args.scenes, seed=0)
        scenes = load_scene_folder(folder).scenes
        encoders = FrozenEncoders(EncoderSpec("default", "torchvision:mobilenet_v2"), args.device)
        text_encoder, image_encoder = encoders.text, encoders.image  # loading is not timed
        print(f"{len(scenes)} scenes, batch {args.batch_size}, device {args.device}, "
              f"encoders {text_encoder.name} ({text_encoder.dim}-d) + {image_encoder.name} ({image_encoder.dim}-d)")
        captions_of = [s.descriptions for s in scenes]
        device = torch.device(args.device)

        def fresh_model() -> tuple[SceneSearchModel, torch.optim.Optimizer]:
            seed_everything(0)
            model = SceneSearchModel(text_encoder.dim, image_encoder.dim).to(device)
            return model, torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model, optimizer, feats: FeatureTensors, rows: list[int]) -> None:
            batch = {k: v.to(device) for k, v in feats.collate(rows).items()}
            loss = model.contrastive_loss(feats, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        order = torch.Generator().manual_seed(0)

        # ---- the plain way: encode every batch again, every epoch ----
        model, optimizer = fresh_model()
        plain_times = []
        for _ in range(args.plain_epochs):
            started = time.perf_counter()
            for rows in torch.randperm(len(scenes), generator=order).split(args.batch_size):
                batch_scenes = [scenes[i] for i in rows.tolist()]
                images = decode_images([s.image for s in batch_scenes], workers=args.workers, min_side=image_encoder.image_size)
                image_feats = image_encoder.encode(torch.stack([image_encoder.transform(im) for im in images])).numpy()
                texts, owner = [], []
                for position, i in enumerate(rows.tolist()):
                    texts += captions_of[i]
                    owner += [position] * len(captions_of[i])
                text_feats = text_encoder.encode(texts)
                feats = FeatureTensors.build(text_feats, np.asarray(owner), image_feats, None).to(device)
                step(model, optimizer, feats, list(range(len(rows))))
            plain_times.append(time.perf_counter() - started)

        # ---- kitaeru's way: encode once, train every epoch on the stored features ----
        started = time.perf_counter()
        cached = extract_features(scenes, encoders, cache_dir=Path(tmp) / "cache", workers=args.workers,
                                  batch_size=args.batch_size)
        extraction = time.perf_counter() - started
        feats = FeatureTensors.build(cached.text, cached.owner, cached.image, None).to(device)
        model, optimizer = fresh_model()
        cached_times = []
        for _ in range(args.cached_epochs):
            started = time.perf_counter()
            for rows in torch.randperm(len(cached.image), generator=order).split(args.batch_size):
                step(model, optimizer, feats, rows.tolist())
            cached_times.append(time.perf_counter() - started)

    plain = statistics.median(plain_times)
    fast = statistics.median(cached_times)
    print(f"plain (re-encode every epoch): {plain:.3f} s/epoch (median of {len(plain_times)})")
    print(f"kitaeru (cached features):     {fast:.4f} s/epoch (median of {len(cached_times)}), "
          f"plus {extraction:.2f} s once to encode and cache")
    print(f"break-even after {extraction / max(plain - fast, 1e-9):.2f} epochs; 30 epochs: "
          f"plain {30 * plain:.1f} s vs kitaeru {extraction + 30 * fast:.1f} s")
    print(f"per-epoch speed-up (plain / cached): {plain / fast:.1f}x")


if __name__ == "__main__":
    main()
