"""Seconds per LoRA training step and peak memory: kitaeru (cached latents) vs the diffusers example loop.

The diffusers example ``train_text_to_image_lora.py`` pushes every image through the VAE and every
caption through the text encoder at every step. ``kitaeru lora train`` encodes both once (the VAE's
latent distribution and the text embeddings, cached on disk) and samples the latent from the cached
distribution at each step, so a step costs the UNet only. Both ways here train the same UNet + LoRA
(PEFT, rank 4, the guide's target modules) with AdamW on the same images of the tiny offline
pipeline (``write_tiny_pipeline``) at 256 px, in one process. kitaeru's number comes from its real
training loop (``train_lora``, timed between steps); the one-off cache build is
printed too. Peak memory: CUDA max allocated, or on the CPU the growth of the process RSS (sampled).
Both report the median step (the first one left out). The last line is the seconds-per-step ratio.

    python benchmarks/lora_step.py                        # ~2-3 minutes on 2 CPU cores (256 px is slow there)
    python benchmarks/lora_step.py --images 16 --resolution 512 --device cuda --base ID_OR_DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("KITAERU_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "floorplans"


class PeakMemory:
    """Peak CUDA allocation, or the peak growth of this process's RSS (sampled every 2 ms)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            try:
                import psutil
            except ImportError:  # not a kitaeru dependency: no CPU memory numbers then
                self.cuda, self.thread = None, None
                return self
            self.proc = psutil.Process()
            self.base = self.peak = self.proc.memory_info().rss
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        elif self.thread is None:
            self.mb = float("nan")
        else:
            self.stop.set()
            self.thread.join()
            self.mb = (self.peak - self.base) / 2**20


def plain_loop(base: Path, items, resolution: int, steps: int, device: str, seed: int = 0) -> tuple[float, float]:
    """The example script's step: transforms, VAE encode, text encode, noise, UNet, backward, AdamW."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from torchvision import transforms
    from transformers import CLIPTextModel, CLIPTokenizer

    from kitaeru.recipes.lora.training import load_rgb

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder").to(device).requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae").to(device).requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet").to(device).requires_grad_(False)
    scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)
    train_transforms = transforms.Compose([
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(resolution), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    images = [load_rgb(it.path) for it in items]  # decoded once, as datasets keeps them
    times = []
    with PeakMemory(device) as memory:
        for step in range(steps):
            started = time.perf_counter()
            i = step % len(items)
            pixels = train_transforms(images[i]).unsqueeze(0).to(device)
            input_ids = tokenizer([items[i].caption], max_length=tokenizer.model_max_length, padding="max_length",
                                  truncation=True, return_tensors="pt").input_ids.to(device)
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (1,), device=device).long()
            noisy = scheduler.add_noise(latents, noise, timesteps)
            hidden = text_encoder(input_ids, return_dict=False)[0]
            pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), noise.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in unet.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            optimizer.zero_grad()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    warm = times[1:] if len(times) > 2 else times
    return statistics.median(warm), memory.mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="floor plans to train on (from ../shared/data/floorplans)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--plain-steps", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2, help="kitaeru epochs (the first is not timed)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--base", default=None, help="base pipeline (default: the tiny offline one)")
    parser.add_argument("--images-dir", default=str(SHARED))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 gives steadier numbers on a shared machine)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from kitaeru.recipes.lora.config import TrainConfig
    from kitaeru.recipes.lora.data import training_items
    from kitaeru.recipes.lora.tiny_pipeline import write_tiny_pipeline
    from kitaeru.recipes.lora.training import train_lora

    with tempfile.TemporaryDirectory(prefix="kitaeru-bench-") as tmp:
        tmp = Path(tmp)
        base = Path(args.base) if args.base else write_tiny_pipeline(tmp / "tiny-sd")
        data = tmp / "plans"
        data.mkdir()
        for path in sorted(Path(args.images_dir).glob("*.png"))[:args.images]:
            shutil.copyfile(path, data / path.name)
        items, _, _ = training_items(data)
        print(f"{len(items)} images at {args.resolution} px, batch 1, device {args.device}, base {base.name}, "
              f"torch threads {torch.get_num_threads()}")

        plain_s, plain_mb = plain_loop(base, items, args.resolution, args.plain_steps, args.device)
        print(f"plain diffusers+PEFT loop (re-encodes every step): {plain_s * 1000:8.1f} ms/step, peak +{plain_mb:7.1f} MiB")

        config = TrainConfig(data_dir=str(data), pretrained_model=str(base), output_dir=str(tmp / "runs"),
                             resolution=args.resolution, batch_size=1, epochs=args.epochs, validation_every=0,
                             checkpoint_every=10**6, device=args.device, tensorboard=False)
        marks: list[float] = []

        def clock(step: int, plan: dict) -> None:  # called before each optimizer step
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

        with PeakMemory(args.device) as memory:
            result = train_lora(config, step_hook=clock)
        durations = [b - a for a, b in zip(marks, marks[1:])]
        ours_s = statistics.median(durations[1:] if len(durations) > 2 else durations)
        print(f"kitaeru lora train (cached latents):               {ours_s * 1000:8.1f} ms/step, peak +{memory.mb:7.1f} MiB "
              f"(whole run incl. model load; cache built once in {result['latent_cache']['seconds']:.2f} s)")
        print(f"ratio (plain / kitaeru seconds per step): {plain_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
