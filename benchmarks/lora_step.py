"""Seconds per LoRA training step and peak memory: kitaeru (cached latents) vs the diffusers example loop.

The diffusers example ``train_text_to_image_lora.py`` pushes every image through the VAE and every
caption through the text encoder at every step. ``kitaeru lora train`` encodes both once (the VAE's
latent distribution and the text embeddings, cached on disk) and samples the latent from the cached
distribution at each step, so a step costs the UNet (+ AdamW) only. Both sides train the same UNet +
LoRA (PEFT, rank 4, the guide's target modules) with AdamW on the same images of the tiny offline
pipeline (``write_tiny_pipeline``) at 256 px.

Each side runs in a process of its own (this script starts itself with ``--side``), so neither
measures memory on a heap the other one grew. Peak memory: CUDA max allocated, or on the CPU the
peak growth of the process's RSS, both from before the models load to the end of the side. Time per
step: on the CPU the process's **CPU seconds** (one torch thread, so other jobs on a shared machine
do not inflate it the way they inflate wall time), on CUDA wall time after a synchronize. Both
report the median step with the first step left out. The plain loop also times its parts (VAE encode, text encode, UNet + backward +
AdamW), which gives the **ceiling**: caching removes the encodes and nothing else, so no cached loop
can be faster than ``step / (step - encodes)``. kitaeru's number comes from its real training loop
(``train_lora``, timed between optimizer steps); ``--variant`` times its options the same way.

    python benchmarks/lora_step.py                        # ~4 minutes on 2 busy CPU cores (3 rounds)
    python benchmarks/lora_step.py --variant text-encoder --variant captions --variant no-cache   # ~10 minutes
    python benchmarks/lora_step.py --images 16 --resolution 512 --device cuda --base ID_OR_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("KITAERU_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "floorplans"
# kitaeru settings of each --variant (the per-step cost of an option, measured like the baseline)
VARIANTS = {"cached": {}, "text-encoder": {"train_text_encoder": True}, "no-cache": {"cache_latents": False},
            "captions": {}, "snr": {"snr_gamma": 5.0}}


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
            return self
        try:
            import psutil
        except ImportError:  # not a kitaeru dependency: no CPU memory numbers then
            self.thread = None
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


def clock(device: str) -> float:
    """CPU seconds of this process on the CPU; wall seconds after a synchronize on CUDA."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


def _median(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 2 else values)


def plain_loop(base: Path, items, resolution: int, steps: int, device: str, seed: int = 0) -> dict:
    """The example script's step: transforms, VAE encode, text encode, noise, UNet, backward, AdamW."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from torchvision import transforms
    from transformers import CLIPTextModel, CLIPTokenizer

    from kitaeru.recipes.lora.images import load_rgb

    def sync() -> float:
        return clock(device)

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
    parts: dict[str, list[float]] = {"step": [], "vae": [], "text": [], "unet": []}
    for step in range(steps):
        t0 = sync()
        i = step % len(items)
        pixels = train_transforms(images[i]).unsqueeze(0).to(device)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
        t1 = sync()
        input_ids = tokenizer([items[i].caption], max_length=tokenizer.model_max_length, padding="max_length",
                              truncation=True, return_tensors="pt").input_ids.to(device)
        with torch.no_grad():
            hidden = text_encoder(input_ids, return_dict=False)[0]
        t2 = sync()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (1,), device=device).long()
        noisy = scheduler.add_noise(latents, noise, timesteps)
        pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in unet.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad()
        t3 = sync()
        for key, value in (("step", t3 - t0), ("vae", t1 - t0), ("text", t2 - t1), ("unet", t3 - t2)):
            parts[key].append(value)
    return {f"{k}_s": _median(v) for k, v in parts.items()}


def kitaeru_loop(base: Path, data: Path, out: Path, args, variant: str) -> dict:
    from kitaeru.recipes.lora.config import TrainConfig
    from kitaeru.recipes.lora.training import train_lora

    config = TrainConfig(data_dir=str(data), pretrained_model=str(base), output_dir=str(out), resolution=args.resolution,
                         batch_size=1, epochs=args.epochs, validation_every=0, checkpoint_every=10**6,
                         device=args.device, tensorboard=False, **VARIANTS[variant])
    marks: list[float] = []

    def mark(step: int, plan: dict) -> None:  # called before each optimizer step
        marks.append(clock(args.device))

    result = train_lora(config, step_hook=mark)
    marks.append(clock(args.device))  # the last step ends before the final checkpoint/export (a few ms)
    durations = [b - a for a, b in zip(marks, marks[1:])]
    return {"step_s": _median(durations), "cache_s": result["latent_cache"].get("seconds")}


def one_side(args) -> None:
    """Run one side in this process and print its numbers as one JSON line."""
    import torch

    from kitaeru.recipes.lora.data import training_items

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    base, data = Path(args.base) if args.base else work / "tiny-sd", work / ("captions" if args.side == "captions" else "plans")
    items, _, _ = training_items(data)
    with PeakMemory(args.device) as memory:
        if args.side == "plain":
            numbers = plain_loop(base, items, args.resolution, args.plain_steps, args.device)
        else:
            numbers = kitaeru_loop(base, data, work / f"runs-{args.side}", args, args.side)
    print("RESULT " + json.dumps({**numbers, "peak_mb": memory.mb}))


def _prepare(work: Path, args) -> None:
    from kitaeru.recipes.lora.tiny_pipeline import write_tiny_pipeline

    if not args.base:
        write_tiny_pipeline(work / "tiny-sd")
    for name in ("plans", "captions"):
        (work / name).mkdir()
        for path in sorted(Path(args.images_dir).glob("*.png"))[:args.images]:
            shutil.copyfile(path, work / name / path.name)
            if name == "captions":  # three captions per image, one drawn per step
                path_txt = (work / name / path.name).with_suffix(".txt")
                path_txt.write_text(f"a floor plan\nplan {path.stem}\nline drawing of {path.stem}\n")


def _run_side(side: str, work: Path, argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv, "--side", side, "--work", str(work)],
                          capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"the {side} side failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _rounds(sides: list[str], work: Path, argv: list[str], rounds: int) -> dict[str, dict]:
    """Every side ``rounds`` times, interleaved (plain, cached, variants, plain, ...) so that load from
    other work on the machine falls on all of them alike; per side the median of each number over the
    rounds, and the step's range as ``step_lo``/``step_hi``."""
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for _ in range(rounds):
        for side in sides:
            runs[side].append(_run_side(side, work, argv))
    out = {}
    for side, results in runs.items():
        merged = {k: statistics.median(r[k] for r in results) for k in results[0] if results[0][k] is not None}
        merged.update(step_lo=min(r["step_s"] for r in results), step_hi=max(r["step_s"] for r in results))
        if "cache_s" in merged:  # built in the first round, read back (a hit) in the others
            merged["cache_s"] = max(r["cache_s"] for r in results)
        out[side] = merged
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="floor plans to train on (from ../shared/data/floorplans)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--plain-steps", type=int, default=16, help="steps of the plain loop (the first is not timed)")
    parser.add_argument("--epochs", type=int, default=4,
                        help="kitaeru epochs of --images steps each (the first step is not timed)")
    parser.add_argument("--rounds", type=int, default=3, help="times each side runs, interleaved (medians reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--base", default=None, help="base pipeline (default: the tiny offline one)")
    parser.add_argument("--images-dir", default=str(SHARED))
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 gives steadier numbers on a shared machine)")
    parser.add_argument("--variant", action="append", default=[], choices=sorted(set(VARIANTS) - {"cached"}),
                        help="also time kitaeru with this option (repeatable): text-encoder (--train-text-encoder), "
                        "captions (three captions per image), no-cache (--no-cache-latents), snr (--snr-gamma 5)")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return one_side(args)

    with tempfile.TemporaryDirectory(prefix="kitaeru-bench-") as tmp:
        work = Path(tmp)
        _prepare(work, args)
        unit = "wall" if args.device.startswith("cuda") else "CPU"
        print(f"{args.images} images at {args.resolution} px, batch 1, device {args.device}, "
              f"base {args.base or 'tiny offline pipeline'}, torch threads {args.threads}; each side in its own "
              f"process, {args.rounds} rounds interleaved; ms = median {unit} milliseconds per step [range over "
              "rounds]; peak = memory growth from before the models load")
        found = _rounds(["plain", "cached", *args.variant], work, sys.argv[1:], args.rounds)
        plain, ours = found["plain"], found["cached"]

        def ms(r: dict) -> str:
            return f"{r['step_s'] * 1000:7.1f} ms/step [{r['step_lo'] * 1000:.1f}-{r['step_hi'] * 1000:.1f}]"

        print(f"plain diffusers+PEFT loop (re-encodes every step): {ms(plain)}, peak +{plain['peak_mb']:6.1f} MiB; "
              f"of it VAE encode {plain['vae_s'] * 1000:.1f} ms, text encode {plain['text_s'] * 1000:.1f} ms, "
              f"UNet + backward + AdamW {plain['unet_s'] * 1000:.1f} ms")
        ceiling = plain["step_s"] / max(plain["unet_s"], 1e-9)
        print(f"ceiling of any cache (plain step / its UNet part): {ceiling:.2f}x "
              f"(the encodes are {100 * (1 - 1 / ceiling):.0f}% of a plain step)")
        print(f"kitaeru lora train (cached latents):               {ms(ours)}, peak +{ours['peak_mb']:6.1f} MiB "
              f"(cache built once in {ours['cache_s']:.2f} s)")
        for variant in args.variant:
            other = found[variant]
            print(f"kitaeru variant {variant:<14}:                  {ms(other)} "
                  f"({other['step_s'] / ours['step_s']:.2f}x the cached step), peak +{other['peak_mb']:6.1f} MiB")
        print(f"ratio (plain / kitaeru seconds per step): {plain['step_s'] / ours['step_s']:.2f}x "
              f"(ceiling {ceiling:.2f}x)")


if __name__ == "__main__":
    main()
