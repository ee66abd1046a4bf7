"""LoRA training of a Stable Diffusion UNet (and optionally its text encoder) on captioned images.

The order of work:

1. cheap checks (data folder, base model folder, settings, the checkpoint to resume), then the
   dataset's captions;
2. the frozen parts loaded (``model``), the LoRA target modules checked against the UNet;
   only now is the run folder created, so a bad input leaves nothing behind;
3. frozen work done once (``cache``): every image's VAE latent distribution and every caption's
   text embedding, cached on disk (``--no-cache-latents`` re-encodes every step, as the diffusers
   example does);
4. the loop (``loop``): the scheduler's own ``add_noise``, Min-SNR and noise offset on request,
   gradient accumulation, ``lora_model/checkpoint-N`` (``checkpoints``), validation images
   (``evaluation``), ``results.csv`` per epoch, a step budget;
5. ``lora_model/final`` (``export``): a Hub-ready folder with the model card.

Why Fabric and not the Lightning Trainer: resume must continue the same optimizer step and the same
data order from a checkpoint taken mid-epoch, and the checkpoints must be the guide's adapter-only
``checkpoint-N`` folders; the Trainer restarts epochs from their beginning and writes its own
checkpoint format. Fabric gives the same device, precision (autocast + grad scaler) and backward
handling as the other recipes, while the loop, and so the exact step position, stays ours.

Several devices (``--devices N``, ``--num-nodes M``; Fabric starts the processes, or joins the ones
torchrun / SLURM / SageMaker started): a checkpoint gathers every process's generator state, so
resume on the same number of processes continues exactly. Only rank 0 writes the cache first, the
checkpoints, the validation images, the evidence and the final adapter.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from kitaeru.core.errors import ConfigError
from kitaeru.core.run_setup import OpenedRun, RunLayout, given_keys, open_run

from .checkpoints import (LORA_DIR, LORA_WEIGHTS, PEFT_WEIGHTS, check_checkpoint, checkpoints, is_lora_run,
                          resume_checkpoint, run_folder_of)
from .config import RECIPE_NAME, TrainConfig
from .data import quick_check_data_dir, training_items
from .loop import PRECISION, LoraTrainer, StepHook

__all__ = ["train_lora", "check_train", "open_lora_run", "LORA_RUNS", "LORA_DIR", "LORA_WEIGHTS", "PEFT_WEIGHTS"]

# Where LoRA runs sit: <output-dir>/<name> (train, train2, ...) with config.yaml and lora_model/; a
# checkpoint-N or lora_model folder given to --resume stands for its run.
LORA_RUNS = RunLayout(
    RECIPE_NAME, "LoRA", is_run=is_lora_run, locate=run_folder_of, default_name="train",
    # the checkpoint's adapter only loads into (and continues) an adapter of the same shape and scale
    pinned={"rank": "--rank", "lora_alpha": "--lora-alpha", "target_modules": "--target-modules",
            "train_text_encoder": "--train-text-encoder"},
    # --epochs given on resume means train by epochs: the saved step budget would silently win over it
    replace_together=(frozenset({"epochs", "max_train_steps"}),), joins_rank_zero=True)
# The settings the OOM ladder may change, by their field names (the plan of a checkpoint's state.json).
PLAN_FIELDS = ("batch_size", "gradient_accumulation", "gradient_checkpointing", "resolution")


# ---- cheap checks and the run folder ----------------------------------------------------------
def check_train(config: TrainConfig) -> None:
    """What can be checked before any heavy import: the run folder (a used --name, a --resume that
    names no run, a broken checkpoint), the data folder, the base model and the settings."""
    opened, _checkpoint, _plan = open_lora_run(config)
    _check_inputs(opened.config)


def open_lora_run(config: TrainConfig) -> tuple[OpenedRun[TrainConfig], Optional[Path], dict]:
    """(the run: folder and config, the checkpoint to start from, the plan the OOM ladder settled on
    before) — cheap, nothing is created."""
    if config.resume:
        return _open_resumed(config)
    return open_run(config, LORA_RUNS, root=config.output_dir, name=config.name, exist_ok=config.exist_ok), None, {}


def _open_resumed(config: TrainConfig) -> tuple[OpenedRun[TrainConfig], Optional[Path], dict]:
    given = given_keys(config)
    opened = open_run(config, LORA_RUNS, root=config.output_dir, resume=config.resume)
    checkpoint = resume_checkpoint(str(config.resume), opened.run_dir)
    if checkpoint is None:
        return opened, None, {}
    saved_state = check_checkpoint(checkpoint)
    _check_world_size(opened.config, checkpoint, int(saved_state.get("world_size", 1)))
    # What the OOM ladder settled on before, unless set again now: no second trip down the ladder.
    earlier = {k: v for k, v in saved_plan(saved_state).items() if k not in given}
    return opened, checkpoint, earlier


def saved_plan(state: dict) -> dict:
    """A checkpoint's plan by field name; checkpoints written before the plan used the field names
    spell them as the schema's aliases do (``batch`` for ``batch_size``)."""
    from kitaeru.core.config import canonical_keys

    plan = canonical_keys(TrainConfig, state.get("plan") or {})
    return {k: v for k, v in plan.items() if k in PLAN_FIELDS}


def _check_inputs(config: TrainConfig) -> None:
    from kitaeru.models.diffusion import check_pretrained_model

    if not config.data_dir:
        raise ConfigError("--data-dir: give the prepared dataset or a folder of images")
    quick_check_data_dir(Path(config.data_dir))
    check_pretrained_model(config.pretrained_model)
    if config.precision == "fp16" and config.device == "cpu":
        raise ConfigError("--precision fp16 needs a CUDA GPU; use bf16 or no on the CPU")
    if config.validation_every and not config.validation_prompt:
        raise ConfigError("--validation-every needs at least one --validation-prompt (or --validation-every 0)")


def _check_world_size(config: TrainConfig, checkpoint: Path, written_by: int) -> None:
    """Refuse, before the run is touched, a resume on another number of processes (when it is known
    without starting them: ``--devices N``, not ``auto``)."""
    devices = str(config.devices)
    if devices.isdigit() and int(devices) * config.num_nodes != written_by:
        raise ConfigError(f"--resume {checkpoint}: written by {written_by} process(es), not {int(devices) * config.num_nodes} "
                          f"(--devices {devices} --num-nodes {config.num_nodes}); resume on the same number to continue "
                          "the same data order")


# ---- the OOM ladder ---------------------------------------------------------------------------
def halve_batch_keep_effective(plan: dict):
    batch = int(plan["batch_size"])
    if batch <= 1:
        return None
    new = batch // 2
    accum = int(plan["gradient_accumulation"]) * math.ceil(batch / new)
    return ({**plan, "batch_size": new, "gradient_accumulation": accum},
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
def launch_fabric(config: TrainConfig, device):
    """Fabric on the resolved device, or on ``--devices N --num-nodes M`` of its kind; ``launch()``
    starts the other processes (ddp; they re-run this command and join rank 0's run folder) or joins
    the ones torchrun / SLURM / SageMaker started."""
    import lightning as L

    from kitaeru.core.lightning import quiet_lightning, trainer_device_kwargs

    kwargs = trainer_device_kwargs(device, PRECISION[config.precision], devices=config.devices, num_nodes=config.num_nodes,
                                   strategy=config.strategy)
    with quiet_lightning():
        fabric = L.Fabric(**kwargs)
        fabric.launch()
    return fabric


def _sample(items: list, config: TrainConfig) -> list:
    """``--max-train-samples``: a seeded draw of that many images, in the dataset's order."""
    if not config.max_train_samples or config.max_train_samples >= len(items):
        return items
    import random

    keep = sorted(random.Random(config.seed).sample(range(len(items)), config.max_train_samples))
    return [items[i] for i in keep]


def train_lora(config: TrainConfig, *, step_hook: Optional[StepHook] = None) -> dict:
    """Train (or resume) a LoRA run; returns the fields of ``training_result.json``."""
    from kitaeru.core.distributed import is_rank_zero, run_folder, share_run_dir

    opened, resume_checkpoint, earlier_plan = open_lora_run(config)
    config = opened.config
    _check_inputs(config)
    from kitaeru.core.tracking import attach_reporter, check_trackers

    # the pipeline loads before the run folder exists
    check_trackers(config.tracking, resume_dir=opened.run_dir if opened.resumed else None)
    items, skipped, source = training_items(Path(config.data_dir))
    items = _sample(items, config)
    device, components = _load(config)  # heavy imports start here, after the cheap checks

    run_dir = opened.run_dir
    run = run_folder(run_dir, tensorboard=config.tensorboard and config.tracking.tensorboard)
    run.save_config(config.model_copy(update={"resume": None}))
    attach_reporter(run, config.tracking, config, recipe=RECIPE_NAME, resume=opened.resumed)
    run.record_skipped(skipped)
    if is_rank_zero():
        share_run_dir(run_dir)
    plan = {**{field: getattr(config, field) for field in PLAN_FIELDS}, **earlier_plan}
    with run.lifecycle(resume_command=opened.resume_command, recipe=RECIPE_NAME,
                       epochs_planned=config.epochs, base_model=str(config.pretrained_model), device=device.as_dict(),
                       data={"data_dir": str(config.data_dir), "source": source, "images": len(items)},
                       resumed_from=str(resume_checkpoint) if resume_checkpoint else None):
        fabric = launch_fabric(config, device)
        trainer = LoraTrainer(config, components, items, run, fabric, step_hook=step_hook)
        try:
            outcome, plan, recoveries = _fit(trainer, config, run, plan, resume_checkpoint)
            if not fabric.is_global_zero:  # rank 0 writes the adapter and the result
                return {"rank": fabric.global_rank, "run_dir": str(run_dir), "steps": outcome["steps"]}
            from .export import export_final

            final = export_final(trainer, outcome["steps"], outcome["final_loss"], plan)
        finally:
            trainer.close()
        result = _result(trainer, opened, run, outcome, plan, recoveries, final, resume_checkpoint)
        run.write_result("completed", **result)
    return {"status": "completed", **result}


def _load(config: TrainConfig):
    """(device, frozen components with the LoRA targets checked against the UNet)."""
    import torch

    from kitaeru.core.device import resolve_device

    from .model import check_target_modules, load_components

    device = resolve_device(config.device)
    if config.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"--precision fp16 needs a CUDA GPU (device is {device.device}); use bf16 or no")
    weight_dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[config.precision]
    components = load_components(str(config.pretrained_model), weight_dtype)
    check_target_modules(components.unet, config.target_modules)
    return device, components


def _fit(trainer: LoraTrainer, config: TrainConfig, run, plan: dict, resume_checkpoint: Optional[Path]):
    """``trainer.fit`` under the OOM ladder: each recovery resumes from the last checkpoint."""
    from kitaeru.core.resources import fit_with_oom_recovery

    fabric = trainer.fabric
    recoveries: list[dict] = []
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

    outcome, plan, _ = fit_with_oom_recovery(fit, plan, ladder=lora_ladder(), max_steps=4,
                                             enabled=oom_recovery, on_step=on_step)
    return outcome, plan, recoveries


def _result(trainer: LoraTrainer, opened: OpenedRun[TrainConfig], run, outcome: dict, plan: dict, recoveries: list,
            final: Path, resume_checkpoint: Optional[Path]) -> dict:
    config = opened.config
    weights = final / LORA_WEIGHTS
    rows = run.rows
    run_dir = run.path
    return {
        "recipe": RECIPE_NAME, "run_dir": str(run_dir), "base_model": str(config.pretrained_model),
        "epochs_planned": trainer.epochs_planned, "epochs_completed": len(rows), "steps": outcome["steps"],
        "max_train_steps": config.max_train_steps, "steps_per_epoch": outcome["steps_per_epoch"],
        "final_loss": outcome["final_loss"], "metrics": {"loss": rows[-1]["loss"] if rows else None},
        "best_weights": str(weights), "last_weights": str(weights), "final_dir": str(final),
        "model_card": str(final / "README.md"), "last_checkpoint": trainer.state.last_checkpoint,
        "checkpoints": [str(p) for p in checkpoints(trainer.lora_dir)],
        "validation_images": trainer.state.validation_images, "latent_cache": trainer.cache_info,
        "plan": plan, "oom_recoveries": recoveries, "prediction_type": trainer.prediction_type,
        "learning_rate": trainer.learning_rate, "train_text_encoder": config.train_text_encoder,
        "world_size": trainer.world, "effective_batch": trainer.group_size(plan),
        "resume_command": opened.resume_command,
        "resumed_from": str(resume_checkpoint) if resume_checkpoint else None,
    }
