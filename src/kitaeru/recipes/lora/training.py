"""LoRA training of a Stable Diffusion UNet on captioned images, on Lightning Fabric.

The order of work:

1. cheap checks (data folder, base model folder, settings), then the dataset's captions;
2. the frozen parts loaded (tokenizer, text encoder, VAE, UNet, the base's DDPM noise schedule),
   the LoRA target modules checked against the UNet; only now is the run folder created, so a bad
   input leaves nothing behind;
3. frozen work done once: every image's VAE latent distribution and every caption's text
   embedding are computed and cached on disk (keyed by a hash of model + data + resolution), so an
   epoch costs only UNet steps (``--no-cache-latents`` re-encodes every step, as the diffusers
   example does);
4. the loop: the scheduler's own ``add_noise`` (epsilon or v-prediction targets from the
   scheduler config), Min-SNR weighting and noise offset on request, gradient accumulation,
   ``lora_model/checkpoint-N`` every N optimizer steps (written atomically, oldest pruned),
   validation images every ``--validation-every`` epochs, ``results.csv`` per epoch;
5. ``lora_model/final`` (PEFT and diffusers formats) and ``lora_model/adapter_config.json``.

Why Fabric and not the Lightning Trainer: resume must continue the same optimizer step and the same
data order from a checkpoint taken mid-epoch, and the checkpoints must be the guide's adapter-only
``checkpoint-N`` folders; the Trainer restarts epochs from their beginning and writes its own
checkpoint format. Fabric gives the same device, precision (autocast + grad scaler) and backward
handling as the other recipes, while the loop, and so the exact step position, stays ours.

Determinism: the data order of epoch ``e`` is a permutation seeded by ``seed + e``; every random
draw of the loop (latent sample, noise, timesteps, flips) comes from one generator whose state is
saved in each checkpoint. A run of 4 epochs and a run of 2 epochs resumed to 4 end with the same
adapter weights.

Several devices (``--devices N``, ``--num-nodes M``; Fabric starts the processes, or joins the ones
torchrun / SLURM / SageMaker started): each optimizer step takes ``batch x accumulation x world``
images of the epoch's order and every process trains on its own share of them (round-robin), the
gradients averaged by DDP so that a step equals one process's step over the whole group. Each
process has its own generator (seed + rank); a checkpoint gathers every process's generator state,
so resume on the same number of processes continues exactly. Only rank 0 writes the cache first,
the checkpoints, the validation images, the evidence and the final adapter.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from kitaeru.core.errors import ConfigError, DataError

from .config import RECIPE_NAME, TrainConfig
from .data import TrainItem, quick_check_data_dir, training_items

LORA_DIR = "lora_model"
CHECKPOINT_PREFIX = "checkpoint-"
FINAL_DIR = "final"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
PEFT_WEIGHTS = "adapter_model.safetensors"
StepHook = Callable[[int, dict], None]
# --mixed-precision -> Lightning's precision (LoRA weights stay fp32; the frozen ones take the dtype)
PRECISION = {"no": "32-true", "fp16": "16-mixed", "bf16": "bf16-mixed"}


# ---- cheap checks and resume ----------------------------------------------------------------
def check_train(config: TrainConfig) -> None:
    """What can be checked before any heavy import (a wrong --data-dir fails at once)."""
    if config.resume:
        find_resume_target(config)
        return
    _check_inputs(config)


def _check_inputs(config: TrainConfig) -> None:
    from kitaeru.models.diffusion import check_pretrained_model

    if not config.data_dir:
        raise ConfigError("--data-dir: give the prepared dataset or a folder of images")
    quick_check_data_dir(Path(config.data_dir))
    check_pretrained_model(config.pretrained_model)
    if config.mixed_precision == "fp16" and config.device == "cpu":
        raise ConfigError("--mixed-precision fp16 needs a CUDA GPU; use bf16 or no on the CPU")
    if config.validation_every and not config.validation_prompt:
        raise ConfigError("--validation-every needs at least one --validation-prompt (or --validation-every 0)")


def checkpoints(lora_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders, oldest first."""
    if not lora_dir.is_dir():
        return []
    found = [p for p in lora_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def find_resume_target(config: TrainConfig) -> tuple[Path, Optional[Path]]:
    """(run folder, checkpoint to start from or None) for ``--resume latest|PATH``."""
    target = str(config.resume)
    if target == "latest":
        root = Path(config.output_dir)
        runs = [d for d in root.iterdir() if (d / "config.yaml").is_file() and (d / LORA_DIR).is_dir()] if root.is_dir() else []
        if not runs:
            raise ConfigError(f"--resume latest: no LoRA run under {root} (give the run folder with --resume PATH)")
        run_dir = max(runs, key=lambda d: (d / "config.yaml").stat().st_mtime)
        ckpts = checkpoints(run_dir / LORA_DIR)
        return run_dir, (ckpts[-1] if ckpts else None)
    path = Path(target)
    if not path.exists():
        raise ConfigError(f"--resume {target}: not found (give latest, a run folder or a checkpoint-N folder)")
    if path.name.startswith(CHECKPOINT_PREFIX):
        run_dir, ckpt = path.parent.parent, path
        if not (ckpt / "state.json").is_file():
            raise ConfigError(f"--resume {target}: not a complete checkpoint (no state.json)")
    else:
        run_dir = path.parent if path.name == LORA_DIR else path
        ckpts = checkpoints(run_dir / LORA_DIR)
        ckpt = ckpts[-1] if ckpts else None
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {target}: {run_dir} is not a LoRA run folder (no config.yaml)")
    return run_dir, ckpt


def resumed_config(config: TrainConfig, run_dir: Path) -> TrainConfig:
    """The run's saved config with the settings given on this command line on top (``--epochs 10``)."""
    from kitaeru.core.config import format_validation_error, read_yaml
    from pydantic import ValidationError

    saved = read_yaml(run_dir / "config.yaml")
    now = config.model_dump()
    given = {k: now[k] for k in _given_keys(config) if k != "resume"}
    try:
        return TrainConfig.model_validate({**saved, **given, "resume": config.resume})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(run_dir / "config.yaml"))) from None


def _given_keys(config: TrainConfig) -> set[str]:
    """Settings the user gave (flags, key=value, --config/--cfg-name; from Python: the keyword
    arguments): Pydantic records them as the fields that were set, defaults excluded."""
    return set(config.model_fields_set) & set(TrainConfig.model_fields)


# ---- frozen components ----------------------------------------------------------------------
@dataclass
class Components:
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any


def load_components(pretrained: str, dtype: Any = None) -> Components:
    """The frozen parts of an SD pipeline (weights in ``dtype``; our own progress bar replaces the libraries')."""
    from kitaeru.core.errors import require

    require("diffusers", "lora", "Stable Diffusion LoRA training")
    require("peft", "lora", "LoRA adapters")
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import AutoTokenizer, CLIPTextModel
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(pretrained, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", dtype=dtype)
        vae = AutoencoderKL.from_pretrained(pretrained, subfolder="vae", dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", dtype=dtype)
        noise_scheduler = DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler")
    except (OSError, ValueError, EnvironmentError) as exc:
        raise DataError(f"--pretrained-model {pretrained}: cannot load a Stable Diffusion pipeline (tokenizer, "
                        f"text_encoder, vae, unet, scheduler): {str(exc).splitlines()[0][:200]}") from None
    for part in (text_encoder, vae, unet):
        part.requires_grad_(False)
    text_encoder.eval()
    vae.eval()
    return Components(tokenizer, text_encoder, vae, unet, noise_scheduler)


def check_target_modules(unet: Any, targets: list[str]) -> None:
    """Every target must name UNet modules (PEFT would fail later, or match nothing silently)."""
    names = [n for n, _ in unet.named_modules() if n]
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unknown:
        import torch

        leaves = sorted({n.split("attn1.", 1)[1] for n, m in unet.named_modules()
                         if "attn1." in n and isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"--target-modules: no UNet module named {', '.join(repr(u) for u in unknown)} "
                          f"(attention projections: {', '.join(leaves) or 'none'})")


def add_lora(unet: Any, config: TrainConfig) -> None:
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(
        r=config.rank, lora_alpha=config.lora_alpha or config.rank, lora_dropout=config.lora_dropout,
        init_lora_weights="gaussian", target_modules=list(config.target_modules),
    ))


def lora_state_dict(unet: Any) -> dict:
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().to("cpu").float().contiguous().clone() for k, v in get_peft_model_state_dict(unet).items()}


def load_lora_state(unet: Any, state: dict) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(unet, state, adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise DataError(f"checkpoint does not fit this LoRA (unexpected keys such as {unexpected[0]})")


# ---- images ----------------------------------------------------------------------------------
def load_rgb(path: Path):
    """An RGB image; transparency is flattened on white (floor plans are black lines on white)."""
    from PIL import Image

    from kitaeru.data.images import check_image_size, pil_open

    with pil_open(path) as im:
        check_image_size(*im.size, str(path))
        im.load()
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
            canvas.alpha_composite(im)
            return canvas.convert("RGB")
        return im.convert("RGB")


def square(image, resolution: int, *, center_crop: bool, pad: bool, crop_fraction: tuple[float, float] = (0.5, 0.5)):
    """``resolution``-pixel square: padded on white, or cropped (centre or at ``crop_fraction``)."""
    from PIL import Image

    w, h = image.size
    if pad:
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), (255, 255, 255))
        canvas.paste(image, ((side - w) // 2, (side - h) // 2))
        image = canvas
    else:
        side = min(w, h)
        fx, fy = (0.5, 0.5) if center_crop else crop_fraction
        left, top = int(round((w - side) * fx)), int(round((h - side) * fy))
        image = image.crop((left, top, left + side, top + side))
    return image.resize((resolution, resolution), Image.BICUBIC)


def to_pixels(image, flip: bool = False):
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    return tensor.flip(-1) if flip else tensor


# ---- the latent / text cache ---------------------------------------------------------------
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
    data = [(str(i.path.resolve()), i.path.stat().st_size, i.path.stat().st_mtime_ns, i.caption) for i in items]
    settings = [resolution, config.center_crop, config.pad, config.random_flip, config.seed, dtype]
    text = json.dumps([model, data, settings], default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


@dataclass
class Encoded:
    """Cached frozen work: latent distribution per image (and flip) and text embedding per caption."""

    mean: Any  # [N, F, C, h, w] (F = 2 with random flip: original and flipped)
    std: Any
    text: Any  # [U, tokens, dim]
    caption_index: Any  # [N] -> row of ``text``
    path: Optional[Path] = None
    hit: bool = False
    seconds: float = 0.0


# ---- the trainer ------------------------------------------------------------------------------
@dataclass
class LoopState:
    step: int = 0
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    last_loss: Optional[float] = None
    last_checkpoint: Optional[str] = None
    checkpoint_step: int = -1  # the step of the last checkpoint written or resumed from
    validation_images: list[str] = field(default_factory=list)


class LoraTrainer:
    """Owns the frozen components, the LoRA UNet and the run folder; ``fit(plan, checkpoint)`` trains."""

    def __init__(self, config: TrainConfig, components: Components, items: list[TrainItem], run, fabric,
                 *, step_hook: Optional[StepHook] = None):
        import torch

        self.config, self.c, self.items, self.run, self.fabric = config, components, items, run, fabric
        self.device = fabric.device  # this process's device (cuda:<local rank> on several GPUs)
        self.rank, self.world = fabric.global_rank, fabric.world_size
        self.step_hook = step_hook
        self.lora_dir = run.path / LORA_DIR
        if fabric.is_global_zero:
            self.lora_dir.mkdir(exist_ok=True)
        self.weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
        self.precision = PRECISION[config.mixed_precision]
        if config.prediction_type is not None:
            self.c.noise_scheduler.register_to_config(prediction_type=config.prediction_type)
        self.prediction_type = self.c.noise_scheduler.config.prediction_type
        self.scaling_factor = float(getattr(self.c.vae.config, "scaling_factor", 0.18215))
        # Frozen weights in the training dtype, then the adapter, then LoRA weights back to fp32.
        for part in (self.c.text_encoder, self.c.vae, self.c.unet):
            part.to(self.device)
        torch.manual_seed(config.seed)  # the gaussian LoRA init (the same on every process)
        add_lora(self.c.unet, config)
        if self.rank:  # LoRA dropout draws from torch's own generator: other masks on other processes
            torch.manual_seed(config.seed + self.rank)
        for p in self.c.unet.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        self.initial_lora = lora_state_dict(self.c.unet)
        self.state = LoopState()
        self.encoded: Optional[Encoded] = None
        self.images = None  # decoded images when latents are not cached
        self.cache_info: dict[str, Any] = {"enabled": config.cache_latents}

    # -- frozen work ----------------------------------------------------------------------------
    def _encode_text(self, captions: list[str]):
        import torch

        tokens = self.c.tokenizer(captions, max_length=self.c.tokenizer.model_max_length, padding="max_length",
                                  truncation=True, return_tensors="pt").input_ids.to(self.device)
        with torch.no_grad():
            return self.c.text_encoder(tokens, return_dict=False)[0]

    def _encode_pixels(self, pixels):
        import torch

        with torch.no_grad():
            dist = self.c.vae.encode(pixels.to(self.device, dtype=self.weight_dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    def _crop_fraction(self, index: int) -> tuple[float, float]:
        import random

        rng = random.Random(self.config.seed * 1_000_003 + index)
        return rng.random(), rng.random()

    def build_cache(self, resolution: int) -> Encoded:
        import torch
        from safetensors.torch import load_file, save_file

        from kitaeru.core.console import info

        key = cache_key(self.config, self.items, resolution, str(self.weight_dtype).replace("torch.", ""))
        cache_dir = Path(self.config.cache_dir) if self.config.cache_dir else Path(self.config.output_dir) / ".latent_cache"
        path = cache_dir / f"lora-{key}.safetensors"
        started = time.time()
        if path.is_file():
            t = load_file(str(path))
            encoded = Encoded(t["mean"], t["std"], t["text"], t["caption_index"], path, True)
        else:
            flips = (False, True) if self.config.random_flip else (False,)
            means, stds = [], []
            batch = 8
            for start in range(0, len(self.items), batch):
                chunk = self.items[start:start + batch]
                squares = [square(load_rgb(it.path), resolution, center_crop=self.config.center_crop, pad=self.config.pad,
                                  crop_fraction=self._crop_fraction(start + j)) for j, it in enumerate(chunk)]
                per_flip = [self._encode_pixels(torch.stack([to_pixels(s, f) for s in squares])) for f in flips]
                means.append(torch.stack([m for m, _ in per_flip], dim=1).cpu())
                stds.append(torch.stack([s for _, s in per_flip], dim=1).cpu())
            captions = sorted({it.caption for it in self.items})
            text = torch.cat([self._encode_text(captions[i:i + 16]).float().cpu() for i in range(0, len(captions), 16)])
            index = torch.tensor([captions.index(it.caption) for it in self.items], dtype=torch.long)
            encoded = Encoded(torch.cat(means), torch.cat(stds), text, index, path, False)
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            save_file({"mean": encoded.mean.contiguous(), "std": encoded.std.contiguous(), "text": encoded.text.contiguous(),
                       "caption_index": index}, str(tmp), metadata={"key": key, "resolution": str(resolution)})
            os.replace(tmp, path)
        encoded.seconds = round(time.time() - started, 3)
        info(f"latent cache {'hit' if encoded.hit else 'written'}: {path} ({len(self.items)} images, {encoded.seconds:.1f} s)")
        self.cache_info.update({"path": str(path), "hit": encoded.hit, "seconds": encoded.seconds, "resolution": resolution})
        return encoded

    # -- one micro-batch --------------------------------------------------------------------------
    def _latents_and_text(self, indices: list[int], resolution: int, g):
        import torch

        n = len(indices)
        if self.encoded is not None:
            e = self.encoded
            idx = torch.tensor(indices)
            if e.mean.shape[1] > 1:
                which = torch.randint(0, e.mean.shape[1], (n,), generator=g)
            else:
                which = torch.zeros(n, dtype=torch.long)
            mean, std = e.mean[idx, which], e.std[idx, which]
            text = e.text[e.caption_index[idx]].to(self.device, dtype=self.weight_dtype)
        else:
            if self.images is None:
                self.images = [load_rgb(it.path) for it in self.items]
            pixels = []
            for i in indices:
                fraction = tuple(torch.rand(2, generator=g).tolist()) if not self.config.center_crop else (0.5, 0.5)
                flip = bool(torch.randint(0, 2, (1,), generator=g)) if self.config.random_flip else False
                sq = square(self.images[i], resolution, center_crop=self.config.center_crop, pad=self.config.pad,
                            crop_fraction=fraction)
                pixels.append(to_pixels(sq, flip))
            mean, std = self._encode_pixels(torch.stack(pixels))
            mean, std = mean.cpu(), std.cpu()
            text = self._encode_text([self.items[i].caption for i in indices]).to(dtype=self.weight_dtype)
        sample = mean + std * torch.randn(mean.shape, generator=g)
        return (sample * self.scaling_factor).to(self.device), text

    def _loss(self, fabric, unet, indices: list[int], resolution: int, g):
        import torch
        import torch.nn.functional as F

        latents, text = self._latents_and_text(indices, resolution, g)
        b = latents.shape[0]
        noise = torch.randn(latents.shape, generator=g)
        if self.config.noise_offset:
            noise = noise + self.config.noise_offset * torch.randn((b, latents.shape[1], 1, 1), generator=g)
        noise = noise.to(latents.device)
        timesteps = torch.randint(0, self.c.noise_scheduler.config.num_train_timesteps, (b,), generator=g).long()
        timesteps = timesteps.to(latents.device)
        noisy = self.c.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.prediction_type == "epsilon":
            target = noise
        elif self.prediction_type == "v_prediction":
            target = self.c.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            raise ConfigError(f"unsupported prediction_type '{self.prediction_type}' of the base scheduler")
        with fabric.autocast():
            pred = unet(noisy.to(self.weight_dtype), timesteps, text, return_dict=False)[0]
        if self.config.snr_gamma is None:
            return F.mse_loss(pred.float(), target.float(), reduction="mean")
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.c.noise_scheduler, timesteps)
        weights = torch.stack([snr, self.config.snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
        weights = weights / snr if self.prediction_type == "epsilon" else weights / (snr + 1)
        loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.ndim)))
        return (loss * weights).mean()

    # -- the loop ---------------------------------------------------------------------------------
    def total_steps(self, plan: dict) -> tuple[int, int]:
        per_epoch = math.ceil(len(self.items) / self.group_size(plan))
        return per_epoch, per_epoch * self.config.epochs

    def group_size(self, plan: dict) -> int:
        """Images of one optimizer step, all processes together."""
        return plan["batch"] * plan["gradient_accumulation"] * self.world

    def fit(self, plan: dict, checkpoint: Optional[Path]) -> dict:
        import torch
        from diffusers.optimization import get_scheduler

        config, unet, fabric = self.config, self.c.unet, self.fabric
        resolution = plan["resolution"]
        if config.cache_latents:
            # rank 0 encodes and writes the cache; the others then read it (or, on a node that does
            # not share the folder, encode it themselves)
            if not fabric.is_global_zero:
                fabric.barrier()
            self.encoded = self.build_cache(resolution)
            if fabric.is_global_zero and self.world > 1:
                fabric.barrier()
        else:
            self.encoded = None
        if plan["gradient_checkpointing"]:
            unet.enable_gradient_checkpointing()
        elif getattr(unet, "is_gradient_checkpointing", False):
            unet.disable_gradient_checkpointing()
        per_epoch, total = self.total_steps(plan)
        load_lora_state(unet, self.initial_lora if checkpoint is None else _load_safetensors(checkpoint / PEFT_WEIGHTS))
        params = [p for p in unet.parameters() if p.requires_grad]
        for p in params:  # an attempt that ran out of memory mid-step leaves its gradients behind
            p.grad = None
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
        lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                     num_training_steps=total)
        fabric_unet = fabric.setup_module(unet, move_to_device=True)
        optimizer = fabric.setup_optimizers(optimizer)
        g = torch.Generator().manual_seed(config.seed + self.rank)
        self.state = LoopState()
        if checkpoint is not None:
            self._restore(checkpoint, optimizer, lr_scheduler, g)
        unet.train()
        start_epoch, start_group = divmod(self.state.step, per_epoch)
        with _Progress(total, self.state.step, enabled=fabric.is_global_zero) as bar:
            for epoch in range(start_epoch, config.epochs):
                epoch_started = time.time()
                if epoch != start_epoch or start_group == 0:
                    self.state.epoch_loss_sum, self.state.epoch_loss_count = 0.0, 0
                groups = self._groups(epoch, plan)
                for group in groups[start_group if epoch == start_epoch else 0:]:
                    share = group[self.rank::self.world]
                    micro = [share[i:i + plan["batch"]] for i in range(0, len(share), plan["batch"])]
                    if self.step_hook is not None:
                        self.step_hook(self.state.step + 1, dict(plan))
                    step_loss = 0.0
                    for i, m in enumerate(micro):
                        # DDP averages the processes' gradients: weighting each micro-batch by its share
                        # of the whole group (x world) makes the step one over the whole group; the
                        # gradients are exchanged once per step, after the last micro-batch
                        with fabric.no_backward_sync(fabric_unet, enabled=self.world > 1 and i < len(micro) - 1):
                            loss = self._loss(fabric, fabric_unet, m, resolution, g) * (len(m) * self.world / len(group))
                            fabric.backward(loss)
                        step_loss += float(loss.detach())
                    if self.world > 1:  # the step's loss over the whole group, the same on every process
                        step_loss = float(fabric.all_reduce(torch.tensor(step_loss), reduce_op="mean"))
                    fabric.clip_gradients(fabric_unet, optimizer, max_norm=config.max_grad_norm,
                                          error_if_nonfinite=self.precision != "16-mixed")
                    optimizer.step()
                    lr_scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    self.state.step += 1
                    self.state.last_loss = step_loss
                    self.state.epoch_loss_sum += step_loss
                    self.state.epoch_loss_count += 1
                    bar.advance(step_loss, epoch + 1)
                    if config.tensorboard:
                        self.run.log_scalars({"train/step_loss": step_loss}, step=self.state.step)
                    if self.state.step % config.checkpoint_every == 0:
                        self.save_checkpoint(optimizer, lr_scheduler, g, plan, epoch)
                        self.run.heartbeat(last_checkpoint=self.state.last_checkpoint)
                row = {"epoch": epoch + 1, "seconds": round(time.time() - epoch_started, 3),
                       "loss": self.state.epoch_loss_sum / max(1, self.state.epoch_loss_count),
                       "lr": float(optimizer.param_groups[0]["lr"]), "step": self.state.step}
                self.run.log_epoch(row, step=epoch + 1)
                if config.validation_every and (epoch + 1) % config.validation_every == 0:
                    if fabric.is_global_zero:
                        self.validate(fabric, epoch + 1, resolution)
                    if self.world > 1:
                        fabric.barrier()
                    unet.train()
        # decided from the loop's own count, never from the folder: every process must agree (a
        # checkpoint gathers from all of them)
        if self.state.checkpoint_step != self.state.step:
            self.save_checkpoint(optimizer, lr_scheduler, g, plan, config.epochs - 1)
        return {"steps": self.state.step, "steps_per_epoch": per_epoch, "final_loss": self.state.last_loss}

    def _groups(self, epoch: int, plan: dict) -> list[list[int]]:
        """The epoch's optimizer steps as lists of image indices (every process gets at least one:
        a last group smaller than the world is filled from the start of the order, as PyTorch's
        DistributedSampler pads)."""
        import torch

        order = torch.randperm(len(self.items), generator=torch.Generator().manual_seed(self.config.seed + epoch)).tolist()
        size = self.group_size(plan)
        groups = [order[i:i + size] for i in range(0, len(order), size)]
        if len(groups[-1]) < self.world:
            groups[-1] = (groups[-1] + order * self.world)[:self.world]
        return groups

    # -- checkpoints ------------------------------------------------------------------------------
    def _rng_states(self, g) -> dict:
        """This run's random states: one process's, or (collective: every process calls it) every
        process's gathered, rank 0's also at the top level."""
        import torch

        if self.world == 1:
            rng = {"generator": g.get_state(), "torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            return rng
        mine = {"generator": g.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            mine["cuda_device"] = torch.cuda.get_rng_state(self.device)
        from kitaeru.core.lightning import quiet_lightning

        with quiet_lightning():
            gathered = {k: self.fabric.all_gather(v).cpu() for k, v in mine.items()}  # [world, n] each
        ranks = [{k: t[r].clone() for k, t in gathered.items()} for r in range(self.world)]
        return {**ranks[0], "world_size": self.world, "ranks": ranks}

    def save_checkpoint(self, optimizer, lr_scheduler, g, plan: dict, epoch: int) -> Optional[Path]:
        """Write ``checkpoint-<step>`` (rank 0; the others hand over their random states and go on)."""
        import torch
        from safetensors.torch import save_file

        step = self.state.step
        rng = self._rng_states(g)
        final = self.lora_dir / f"{CHECKPOINT_PREFIX}{step}"
        self.state.checkpoint_step = step
        self.state.last_checkpoint = str(final)
        if not self.fabric.is_global_zero:
            return None
        tmp = self.lora_dir / f".tmp-{CHECKPOINT_PREFIX}{step}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(lora_state_dict(self.c.unet), str(tmp / PEFT_WEIGHTS))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng, tmp / "rng.pt")
        scaler = getattr(self.fabric._precision, "scaler", None)
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        state = {"step": step, "epoch": epoch + 1, "epoch_loss_sum": self.state.epoch_loss_sum,
                 "epoch_loss_count": self.state.epoch_loss_count, "last_loss": self.state.last_loss, "plan": plan,
                 "base_model": self.config.pretrained_model, "world_size": self.world}
        (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        limit = self.config.checkpoints_total_limit
        if limit:
            for old in checkpoints(self.lora_dir)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
        return final

    def _restore(self, checkpoint: Path, optimizer, lr_scheduler, g) -> None:
        import torch

        from kitaeru.core.checkpoints import load_checkpoint

        def data(name: str):  # checkpoints are data: pickled objects are refused, never run
            return load_checkpoint(checkpoint / name, trust_flag=None, what="checkpoint file")

        try:
            state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
            optimizer.load_state_dict(data("optimizer.pt"))
            lr_scheduler.load_state_dict(data("scheduler.pt"))
            rng = data("rng.pt")
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise DataError(f"{checkpoint}: cannot resume from this checkpoint ({str(exc).splitlines()[0][:200]})") from None
        written_by = int(state.get("world_size", 1))
        if written_by != self.world:
            raise DataError(f"{checkpoint}: written by {written_by} process(es), this run has {self.world}; "
                            f"resume on the same number (--devices, --num-nodes) to continue the same data order")
        mine = rng["ranks"][self.rank] if self.world > 1 else rng
        g.set_state(mine["generator"])
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(mine["cuda"])
        if "cuda_device" in mine and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_device"], self.device)
        scaler = getattr(self.fabric._precision, "scaler", None)
        if scaler is not None and (checkpoint / "scaler.pt").is_file():
            scaler.load_state_dict(data("scaler.pt"))
        self.state.step = int(state["step"])
        self.state.epoch_loss_sum = float(state.get("epoch_loss_sum", 0.0))
        self.state.epoch_loss_count = int(state.get("epoch_loss_count", 0))
        self.state.last_loss = state.get("last_loss")
        self.state.last_checkpoint = str(checkpoint)
        self.state.checkpoint_step = self.state.step

    # -- validation images ------------------------------------------------------------------------
    def pipeline(self):
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=self.c.vae, text_encoder=self.c.text_encoder, tokenizer=self.c.tokenizer, unet=self.c.unet,
            scheduler=DPMSolverMultistepScheduler.from_config(self.c.noise_scheduler.config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def validate(self, fabric, epoch: int, resolution: int) -> list[str]:
        import numpy as np
        import torch

        config = self.config
        folder = self.run.path / "validation"
        folder.mkdir(exist_ok=True)
        self.c.unet.eval()
        pipe = self.pipeline()
        written = []
        for p_index, prompt in enumerate(config.validation_prompt):
            generator = torch.Generator(device="cpu").manual_seed(config.seed)
            with torch.no_grad(), fabric.autocast():
                images = pipe(prompt, height=resolution, width=resolution, num_inference_steps=config.validation_steps,
                              num_images_per_prompt=config.num_validation_images, generator=generator).images
            for i, image in enumerate(images):
                path = folder / f"epoch{epoch:03d}_prompt{p_index + 1}_{i + 1}.png"
                tmp = path.with_name(f".{path.name}.tmp.png")
                image.save(tmp)
                os.replace(tmp, path)
                written.append(str(path))
            if config.tensorboard:
                writer = self._image_writer()
                stacked = np.stack([np.asarray(im.convert("RGB")) for im in images])
                writer.add_images(f"validation/prompt{p_index + 1}", stacked, epoch, dataformats="NHWC")
                writer.flush()
        self.state.validation_images = written
        return written

    _writer = None

    def _image_writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run.tensorboard_dir))
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- the trained adapter ----------------------------------------------------------------------
    def export_final(self, steps: int, final_loss: Optional[float], plan: dict) -> Path:
        import copy

        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from safetensors.torch import save_file

        from kitaeru.core.storage import atomic_write_json

        state = lora_state_dict(self.c.unet)
        final = self.lora_dir / FINAL_DIR
        tmp = self.lora_dir / f".tmp-{FINAL_DIR}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # PEFT's own layout (keys under base_model.model.), readable by PeftModel.from_pretrained(unet, dir).
        save_file({f"base_model.model.{k}": v for k, v in state.items()}, str(tmp / PEFT_WEIGHTS))
        peft_config = copy.deepcopy(self.c.unet.peft_config["default"])
        peft_config.base_model_name_or_path = str(self.config.pretrained_model)
        peft_config.save_pretrained(str(tmp))
        StableDiffusionPipeline.save_lora_weights(str(tmp), unet_lora_layers=convert_state_dict_to_diffusers(state),
                                                  safe_serialization=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_json(self.lora_dir / "adapter_config.json", {
            "base_model": str(self.config.pretrained_model), "steps": steps, "epochs": self.config.epochs,
            "final_loss": final_loss, "rank": self.config.rank, "lora_alpha": self.config.lora_alpha or self.config.rank,
            "lora_dropout": self.config.lora_dropout, "target_modules": list(self.config.target_modules),
            "resolution": plan["resolution"], "prediction_type": self.prediction_type,
            "learning_rate": self.config.learning_rate, "batch_size": self.config.batch_size,
            "weights": f"{FINAL_DIR}/{LORA_WEIGHTS}", "peft_adapter": f"{FINAL_DIR}/{PEFT_WEIGHTS}",
        })
        return final


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"{path}: cannot read the checkpoint's adapter ({str(exc).splitlines()[0][:200]})") from None


class _Progress:
    """A progress bar with the loss on stderr (none with KITAERU_NO_PROGRESS)."""

    def __init__(self, total: int, done: int, *, enabled: bool = True):
        self.total, self.done, self.progress, self.task = total, done, None, None
        self.enabled = enabled  # one bar: rank 0's

    def __enter__(self) -> "_Progress":
        from kitaeru.core.console import console, progress_disabled

        if self.enabled and not progress_disabled():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                     console=console)
            self.progress.start()
            self.task = self.progress.add_task("lora", total=self.total, completed=self.done, epoch="-", loss="-")
        return self

    def advance(self, loss: float, epoch: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=f"{loss:.4f}", epoch=epoch)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


# ---- the OOM ladder ---------------------------------------------------------------------------
def halve_batch_keep_effective(plan: dict):
    batch = int(plan["batch"])
    if batch <= 1:
        return None
    new = batch // 2
    accum = int(plan["gradient_accumulation"]) * math.ceil(batch / new)
    return ({**plan, "batch": new, "gradient_accumulation": accum},
            f"batch {batch} -> {new}, gradient accumulation {plan['gradient_accumulation']} -> {accum}")


def gradient_checkpointing_on(plan: dict):
    if plan.get("gradient_checkpointing"):
        return None
    return {**plan, "gradient_checkpointing": True}, "gradient checkpointing off -> on"


def lora_ladder():
    from kitaeru.core.resources import smaller_image

    halve_batch_keep_effective.__name__ = "halve_batch"
    gradient_checkpointing_on.__name__ = "gradient_checkpointing"
    smaller = smaller_image(sizes=(1024, 768, 640, 512, 384, 256, 128, 64, 32), key="resolution")
    smaller.__name__ = "smaller_resolution"
    return (halve_batch_keep_effective, gradient_checkpointing_on, smaller)


# ---- the entry --------------------------------------------------------------------------------
def _check_world_size(config: TrainConfig, checkpoint: Path, written_by: int) -> None:
    """Refuse, before the run is touched, a resume on another number of processes (when it is known
    without starting them: ``--devices N``, not ``auto``)."""
    devices = str(config.devices)
    if devices.isdigit() and int(devices) * config.num_nodes != written_by:
        raise ConfigError(f"--resume {checkpoint}: written by {written_by} process(es), not {int(devices) * config.num_nodes} "
                          f"(--devices {devices} --num-nodes {config.num_nodes}); resume on the same number to continue "
                          "the same data order")


def launch_fabric(config: TrainConfig, device):
    """Fabric on the resolved device, or on ``--devices N --num-nodes M`` of its kind; ``launch()``
    starts the other processes (ddp; they re-run this command and join rank 0's run folder) or joins
    the ones torchrun / SLURM / SageMaker started."""
    import lightning as L

    from kitaeru.core.lightning import quiet_lightning, trainer_device_kwargs

    kwargs = trainer_device_kwargs(device, PRECISION[config.mixed_precision], devices=config.devices, num_nodes=config.num_nodes,
                                   strategy=config.strategy)
    with quiet_lightning():
        fabric = L.Fabric(**kwargs)
        fabric.launch()
    return fabric


def train_lora(config: TrainConfig, *, step_hook: Optional[StepHook] = None) -> dict:
    """Train (or resume) a LoRA run; returns the fields of ``training_result.json``."""
    from kitaeru.core.distributed import is_rank_zero, place, run_folder, share_run_dir, shared_run_dir
    from kitaeru.core.run import next_run_dir, refuse_used_run_dir

    handed = shared_run_dir()  # a process Fabric started for ddp joins rank 0's run folder
    if not (handed or config.name or config.resume) and place().world_size > 1:
        # torchrun/SLURM started every process: none can number a folder alone
        raise ConfigError("several processes (torchrun/SLURM) share one run folder: give --name")
    resume_checkpoint: Optional[Path] = None
    run_dir: Optional[Path] = None
    earlier_plan: dict = {}
    if config.resume:
        run_dir, resume_checkpoint = find_resume_target(config)
        given = _given_keys(config)
        config = resumed_config(config, run_dir)
        if resume_checkpoint is not None:
            try:
                saved_state = json.loads((resume_checkpoint / "state.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved_state = {}
            _check_world_size(config, resume_checkpoint, int(saved_state.get("world_size", 1)))
            # What the OOM ladder settled on before, unless set again now: no second trip down the ladder.
            saved_plan = saved_state.get("plan") or {}
            keys = {"batch": "batch_size", "gradient_accumulation": "gradient_accumulation",
                    "gradient_checkpointing": "gradient_checkpointing", "resolution": "resolution"}
            earlier_plan = {k: v for k, v in saved_plan.items() if k in keys and keys[k] not in given}
    _check_inputs(config)
    items, skipped, source = training_items(Path(config.data_dir))

    import torch  # heavy imports start here, after the cheap checks

    from kitaeru.core.device import resolve_device
    from kitaeru.core.resources import fit_with_oom_recovery

    device = resolve_device(config.device)
    if config.mixed_precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"--mixed-precision fp16 needs a CUDA GPU (device is {device.device}); use bf16 or no")
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.mixed_precision]
    components = load_components(str(config.pretrained_model), weight_dtype)
    check_target_modules(components.unet, config.target_modules)

    if run_dir is None:
        root = Path(config.output_dir)
        if handed:
            run_dir = Path(handed)
        elif config.name:
            run_dir = root / config.name
            if is_rank_zero():
                refuse_used_run_dir(run_dir, exist_ok=config.exist_ok)
        else:
            run_dir = next_run_dir(root, "train")
    run = run_folder(run_dir, tensorboard=config.tensorboard)
    run.save_config(config.model_copy(update={"resume": None}))
    run.record_skipped(skipped)
    if is_rank_zero():
        share_run_dir(run_dir)
    recoveries: list[dict] = []
    plan = {"batch": config.batch_size, "gradient_accumulation": config.gradient_accumulation,
            "gradient_checkpointing": config.gradient_checkpointing, "resolution": config.resolution, **earlier_plan}
    with run.lifecycle(resume_command=f"kitaeru lora train --resume {run_dir}", recipe=RECIPE_NAME,
                       epochs_planned=config.epochs, base_model=str(config.pretrained_model), device=device.as_dict(),
                       data={"data_dir": str(config.data_dir), "source": source, "images": len(items)},
                       resumed_from=str(resume_checkpoint) if resume_checkpoint else None):
        fabric = launch_fabric(config, device)
        trainer = LoraTrainer(config, components, items, run, fabric, step_hook=step_hook)
        oom_recovery = config.oom_recovery and fabric.world_size == 1
        if config.oom_recovery and not oom_recovery and fabric.is_global_zero:
            from kitaeru.core.console import info

            # one process cannot step down the ladder alone while the others wait in a gradient exchange
            info(f"out-of-memory recovery is off with {fabric.world_size} processes; lower --batch-size if memory runs out")
        first = [True]

        def fit(plan: dict, again: bool) -> dict:
            if first[0]:
                first[0] = False
                return trainer.fit(plan, resume_checkpoint)
            ckpts = checkpoints(trainer.lora_dir)
            return trainer.fit(plan, ckpts[-1] if ckpts else None)

        def on_step(record) -> None:
            from kitaeru.core.console import warn

            recoveries.append(record.as_dict())
            warn(f"out of memory: {record.change}; resuming from the last checkpoint")
            run.heartbeat(oom_recoveries=list(recoveries))

        try:
            outcome, plan, _ = fit_with_oom_recovery(fit, plan, ladder=lora_ladder(), max_steps=4,
                                                     enabled=oom_recovery, on_step=on_step)
            if not fabric.is_global_zero:  # rank 0 writes the adapter and the result
                return {"rank": fabric.global_rank, "run_dir": str(run_dir), "steps": outcome["steps"]}
            final = trainer.export_final(outcome["steps"], outcome["final_loss"], plan)
        finally:
            trainer.close()
        weights = final / LORA_WEIGHTS
        rows = run.rows
        result = {
            "recipe": RECIPE_NAME, "run_dir": str(run_dir), "base_model": str(config.pretrained_model),
            "epochs_planned": config.epochs, "epochs_completed": len(rows), "steps": outcome["steps"],
            "steps_per_epoch": outcome["steps_per_epoch"], "final_loss": outcome["final_loss"],
            "metrics": {"loss": rows[-1]["loss"] if rows else None},
            "best_weights": str(weights), "last_weights": str(weights), "final_dir": str(final),
            "last_checkpoint": trainer.state.last_checkpoint,
            "checkpoints": [str(p) for p in checkpoints(trainer.lora_dir)],
            "validation_images": trainer.state.validation_images, "latent_cache": trainer.cache_info,
            "plan": plan, "oom_recoveries": recoveries, "prediction_type": trainer.prediction_type,
            "world_size": fabric.world_size, "effective_batch": trainer.group_size(plan),
            "resume_command": f"kitaeru lora train --resume {run_dir}",
            "resumed_from": str(resume_checkpoint) if resume_checkpoint else None,
        }
        run.write_result("completed", **result)
    return result
