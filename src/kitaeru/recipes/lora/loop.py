"""The LoRA training loop on Lightning Fabric: one optimizer step at a time, in an order that resume
can continue exactly.

Determinism: the data order of epoch ``e`` is a permutation seeded by ``seed + e``; every random
draw of the loop (latent sample, caption choice, noise, timesteps, flips, crops) comes from one
generator whose state is saved in each checkpoint. With several processes each optimizer step
takes ``batch x accumulation x world`` images and every process trains on its own share
(round-robin), DDP averaging the gradients so a step equals one process's step over the group.

Every metric leaves the loop through :func:`log_metrics` (per step and per epoch): the one place
to add another experiment tracker.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from kitaeru.core.errors import ConfigError

from .cache import Encoded, build_cache
from .checkpoints import PEFT_FILES, load_safetensors, restore, save_checkpoint
from .model import Components, add_lora, load_lora_state, lora_state_dict, trained_modules
from .config import TrainConfig
from .data import TrainItem
from .images import load_rgb, square, to_pixels
from .evaluation import validate

StepHook = Callable[[int, dict], None]
# --precision -> Lightning's precision (LoRA weights stay fp32; the frozen ones take the dtype)
PRECISION = {"no": "32-true", "fp16": "16-mixed", "bf16": "bf16-mixed"}


def log_metrics(run, config: TrainConfig, kind: str, values: dict, step: int) -> None:
    """The one exit of the loop's numbers: ``kind`` "step" (``values``: loss, lr; ``step``: the
    optimizer step) or "epoch" (``values``: the results.csv row; ``step``: the epoch)."""
    if kind == "epoch":
        run.log_epoch(values, step=step)
    elif config.tensorboard or getattr(run, "reporter", None) is not None:  # TensorBoard and/or --report-to
        run.log_scalars({f"train/step_{k}": v for k, v in values.items()}, step=step)


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
    """Owns the frozen components, the LoRA modules and the run folder; ``fit(plan, checkpoint)`` trains."""

    def __init__(self, config: TrainConfig, components: Components, items: list[TrainItem], run, fabric,
                 *, step_hook: Optional[StepHook] = None):
        import torch

        self.config, self.c, self.items, self.run, self.fabric = config, components, items, run, fabric
        self.device = fabric.device  # this process's device (cuda:<local rank> on several GPUs)
        self.rank, self.world = fabric.global_rank, fabric.world_size
        self.step_hook = step_hook
        self.lora_dir = run.path / "lora_model"
        if fabric.is_global_zero:
            self.lora_dir.mkdir(exist_ok=True)
        self.weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.precision]
        self.precision = PRECISION[config.precision]
        if config.prediction_type is not None:
            self.c.noise_scheduler.register_to_config(prediction_type=config.prediction_type)
        self.prediction_type = self.c.noise_scheduler.config.prediction_type
        self.scaling_factor = float(getattr(self.c.vae.config, "scaling_factor", 0.18215))
        # Frozen weights in the training dtype, then the adapters, then LoRA weights back to fp32.
        for part in (self.c.text_encoder, self.c.vae, self.c.unet):
            part.to(self.device)
        torch.manual_seed(config.seed)  # the gaussian LoRA init (the same on every process)
        add_lora(self.c, config)
        if self.rank:  # LoRA dropout draws from torch's own generator: other masks on other processes
            torch.manual_seed(config.seed + self.rank)
        self.modules = trained_modules(self.c, config)
        for module in self.modules.values():
            for p in module.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
        self.initial_lora = {name: lora_state_dict(m) for name, m in self.modules.items()}
        self.state = LoopState()
        self.encoded: Optional[Encoded] = None
        self.images = None  # decoded images when latents are not cached
        self.cache_info: dict[str, Any] = {"enabled": config.cache_latents}
        self.learning_rate = config.learning_rate
        self.epochs_planned = config.epochs
        self.writer = None
        self.wrapped: dict[str, Any] = {}

    # -- frozen work ----------------------------------------------------------------------------
    def _tokens(self, captions: list[str]):
        return self.c.tokenizer(captions, max_length=self.c.tokenizer.model_max_length, padding="max_length",
                                truncation=True, return_tensors="pt").input_ids.to(self.device)

    def _encode_text(self, captions: list[str]):
        import torch

        with torch.no_grad():
            return self.c.text_encoder(self._tokens(captions), return_dict=False)[0]

    def _encode_pixels(self, pixels):
        import torch

        with torch.no_grad():
            dist = self.c.vae.encode(pixels.to(self.device, dtype=self.weight_dtype)).latent_dist
        return dist.mean.float(), dist.std.float()

    # -- one micro-batch --------------------------------------------------------------------------
    def _caption_choice(self, indices: list[int], g) -> list[int]:
        """Which of each image's captions this step uses: one drawn per image and step when some image
        has several (no draw otherwise, so single-caption runs keep their random stream)."""
        import torch

        if getattr(self, "_most_captions", None) is None:  # once per trainer, not per step
            self._most_captions = max(len(it.captions) for it in self.items)
        if self._most_captions == 1:
            return [0] * len(indices)
        counts = [len(self.items[i].captions) for i in indices]
        return [int(k) for k in (torch.rand(len(indices), generator=g) * torch.tensor(counts)).long().tolist()]

    def _latents(self, indices: list[int], resolution: int, g):
        import torch

        n = len(indices)
        if self.encoded is not None:
            e = self.encoded
            idx = torch.tensor(indices)
            which = torch.randint(0, e.mean.shape[1], (n,), generator=g) if e.mean.shape[1] > 1 else torch.zeros(n, dtype=torch.long)
            mean, std = e.mean[idx, which], e.std[idx, which]
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
        sample = mean + std * torch.randn(mean.shape, generator=g)
        return (sample * self.scaling_factor).to(self.device)

    def _text(self, indices: list[int], choice: list[int]):
        """Caption embeddings: from the cache, re-encoded (no cache), or through the trained text encoder."""
        import torch

        if "text_encoder" in self.wrapped:
            tokens = self._tokens([self.items[i].captions[k] for i, k in zip(indices, choice)])
            return self.wrapped["text_encoder"](tokens, return_dict=False)[0]
        if self.encoded is not None:
            rows = self.encoded.caption_index[torch.tensor(indices), torch.tensor(choice)]
            return self.encoded.text[rows].to(self.device, dtype=self.weight_dtype)
        return self._encode_text([self.items[i].captions[k] for i, k in zip(indices, choice)]).to(dtype=self.weight_dtype)

    def _loss(self, fabric, indices: list[int], resolution: int, g):
        import torch
        import torch.nn.functional as F

        latents = self._latents(indices, resolution, g)
        choice = self._caption_choice(indices, g)
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
            text = self._text(indices, choice)
            pred = self.wrapped["unet"](noisy.to(self.weight_dtype), timesteps, text, return_dict=False)[0]
        if self.config.snr_gamma is None:
            return F.mse_loss(pred.float(), target.float(), reduction="mean")
        from diffusers.training_utils import compute_snr

        snr = compute_snr(self.c.noise_scheduler, timesteps)
        weights = torch.stack([snr, self.config.snr_gamma * torch.ones_like(timesteps)], dim=1).min(dim=1)[0]
        weights = weights / snr if self.prediction_type == "epsilon" else weights / (snr + 1)
        loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=list(range(1, pred.ndim)))
        return (loss * weights).mean()

    # -- the loop ---------------------------------------------------------------------------------
    def group_size(self, plan: dict) -> int:
        """Images of one optimizer step, all processes together."""
        return plan["batch_size"] * plan["gradient_accumulation"] * self.world

    def total_steps(self, plan: dict) -> tuple[int, int]:
        """(steps per epoch, steps of the run): the step budget when given, else epochs x steps per epoch."""
        per_epoch = math.ceil(len(self.items) / self.group_size(plan))
        total = self.config.max_train_steps or per_epoch * self.config.epochs
        self.epochs_planned = math.ceil(total / per_epoch)
        return per_epoch, total

    def _setup(self, plan: dict, checkpoint: Optional[Path]):
        """Cache, adapter weights (initial or the checkpoint's), optimizer and schedule, wrapped by Fabric."""
        import torch
        from diffusers.optimization import get_scheduler

        config, fabric = self.config, self.fabric
        if config.cache_latents:
            # rank 0 encodes and writes the cache; the others then read it (or, on a node that does
            # not share the folder, encode it themselves)
            if not fabric.is_global_zero:
                fabric.barrier()
            self.encoded = build_cache(config, self.items, plan["resolution"], str(self.weight_dtype).replace("torch.", ""),
                                       self._encode_pixels, self._encode_text)
            self.cache_info.update({"path": str(self.encoded.path), "hit": self.encoded.hit,
                                    "seconds": self.encoded.seconds, "resolution": plan["resolution"]})
            if fabric.is_global_zero and self.world > 1:
                fabric.barrier()
        else:
            self.encoded = None
        unet = self.c.unet
        if plan["gradient_checkpointing"]:
            unet.enable_gradient_checkpointing()
            if "text_encoder" in self.modules:
                self.c.text_encoder.gradient_checkpointing_enable()
        elif getattr(unet, "is_gradient_checkpointing", False):
            unet.disable_gradient_checkpointing()
        for name, module in self.modules.items():
            load_lora_state(module, self.initial_lora[name] if checkpoint is None else
                            load_safetensors(checkpoint / PEFT_FILES[name]))
        params = [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]
        for p in params:  # an attempt that ran out of memory mid-step leaves its gradients behind
            p.grad = None
        per_epoch, total = self.total_steps(plan)
        # --scale-lr: the diffusers scripts' rule, lr x the images of one optimizer step
        self.learning_rate = config.learning_rate * (self.group_size(plan) if config.scale_lr else 1)
        optimizer = torch.optim.AdamW(params, lr=self.learning_rate, weight_decay=config.weight_decay)
        lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                     num_training_steps=total)
        self.wrapped = {name: fabric.setup_module(m, move_to_device=True) for name, m in self.modules.items()}
        return fabric.setup_optimizers(optimizer), lr_scheduler, per_epoch, total

    def fit(self, plan: dict, checkpoint: Optional[Path]) -> dict:
        import torch

        config, fabric = self.config, self.fabric
        optimizer, lr_scheduler, per_epoch, total = self._setup(plan, checkpoint)
        g = torch.Generator().manual_seed(config.seed + self.rank)
        self.state = LoopState()
        if checkpoint is not None:
            restore(self, checkpoint, optimizer, lr_scheduler, g)
            if fabric.is_global_zero:
                from kitaeru.core.console import info

                info(f"resuming from {checkpoint} (step {self.state.step} of {total}, "
                     f"epoch {self.state.step // per_epoch + 1} of {self.epochs_planned})")
        for module in self.modules.values():
            module.train()
        start_epoch, start_group = divmod(self.state.step, per_epoch)
        with _Progress(total, self.state.step, enabled=fabric.is_global_zero) as bar:
            for epoch in range(start_epoch, self.epochs_planned):
                if self.state.step >= total:
                    break
                epoch_started = time.time()
                if epoch != start_epoch or start_group == 0:
                    self.state.epoch_loss_sum, self.state.epoch_loss_count = 0.0, 0
                for group in self._groups(epoch, plan)[start_group if epoch == start_epoch else 0:]:
                    self._step(group, plan, optimizer, lr_scheduler, g)
                    bar.advance(self.state.last_loss, epoch + 1)
                    if self.state.step % config.checkpoint_every == 0:
                        save_checkpoint(self, optimizer, lr_scheduler, g, plan, epoch)
                        self.run.heartbeat(last_checkpoint=self.state.last_checkpoint)
                    if self.state.step >= total:
                        break
                self._end_epoch(epoch, epoch_started, optimizer, plan)
        # decided from the loop's own count, never from the folder: every process must agree (a
        # checkpoint gathers from all of them)
        if self.state.checkpoint_step != self.state.step:
            save_checkpoint(self, optimizer, lr_scheduler, g, plan, max(0, self.epochs_planned - 1))
        return {"steps": self.state.step, "steps_per_epoch": per_epoch, "final_loss": self.state.last_loss}

    def _step(self, group: list[int], plan: dict, optimizer, lr_scheduler, g) -> None:
        """One optimizer step over ``group`` (this process's share of it, in micro-batches)."""
        import torch

        fabric = self.fabric
        share = group[self.rank::self.world]
        micro = [share[i:i + plan["batch_size"]] for i in range(0, len(share), plan["batch_size"])]
        if self.step_hook is not None:
            self.step_hook(self.state.step + 1, dict(plan))
        step_loss = 0.0
        for i, m in enumerate(micro):
            # DDP averages the processes' gradients: weighting each micro-batch by its share of the
            # whole group (x world) makes the step one over the whole group; the gradients are
            # exchanged once per step, after the last micro-batch
            with contextlib.ExitStack() as stack:
                for wrapped in self.wrapped.values():
                    stack.enter_context(fabric.no_backward_sync(wrapped, enabled=self.world > 1 and i < len(micro) - 1))
                loss = self._loss(fabric, m, plan["resolution"], g) * (len(m) * self.world / len(group))
                fabric.backward(loss)
            step_loss += float(loss.detach())
        if self.world > 1:  # the step's loss over the whole group, the same on every process
            step_loss = float(fabric.all_reduce(torch.tensor(step_loss), reduce_op="mean"))
        fabric.clip_gradients(self.wrapped["unet"], optimizer, max_norm=self.config.max_grad_norm,
                              error_if_nonfinite=self.precision != "16-mixed")
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        s = self.state
        s.step += 1
        s.last_loss = step_loss
        s.epoch_loss_sum += step_loss
        s.epoch_loss_count += 1
        log_metrics(self.run, self.config, "step", {"loss": step_loss}, s.step)

    def _end_epoch(self, epoch: int, started: float, optimizer, plan: dict) -> None:
        s, config, fabric = self.state, self.config, self.fabric
        row = {"epoch": epoch + 1, "seconds": round(time.time() - started, 3),
               "loss": s.epoch_loss_sum / max(1, s.epoch_loss_count),
               "lr": float(optimizer.param_groups[0]["lr"]), "step": s.step}
        log_metrics(self.run, config, "epoch", row, epoch + 1)
        if config.validation_every and (epoch + 1) % config.validation_every == 0:
            if fabric.is_global_zero:
                validate(self, fabric, epoch + 1, plan["resolution"])
            if self.world > 1:
                fabric.barrier()
            for module in self.modules.values():
                module.train()

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

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


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
