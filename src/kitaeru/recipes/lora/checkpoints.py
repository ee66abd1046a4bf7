"""``lora_model/checkpoint-N``: what resume needs to continue the same step, and finding it again.

A checkpoint holds the adapter(s) in PEFT's layout (``adapter_model.safetensors``, and
``text_encoder_adapter_model.safetensors`` with ``--train-text-encoder``), the same adapter in
diffusers' layout with its rank/alpha (``pytorch_lora_weights.safetensors``, so ``load_lora_weights``
and ``lora generate --lora checkpoint-N`` read it), the optimizer, schedule and random states, and
``state.json`` (step, epoch, the loop's running sums, the plan the OOM ladder settled on). It is
written to a temporary folder and renamed, so a killed run never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional

from kitaeru.core.errors import ConfigError, DataError

LORA_DIR = "lora_model"
CHECKPOINT_PREFIX = "checkpoint-"
FINAL_DIR = "final"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
PEFT_WEIGHTS = "adapter_model.safetensors"
# file of each trained module's PEFT state in a checkpoint
PEFT_FILES = {"unet": PEFT_WEIGHTS, "text_encoder": "text_encoder_adapter_model.safetensors"}


def checkpoints(lora_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders, oldest first."""
    if not lora_dir.is_dir():
        return []
    found = [p for p in lora_dir.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def read_state(checkpoint: Path) -> dict:
    """``state.json`` of a checkpoint, checked: a one-line error for anything but a step record."""
    path = checkpoint / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot resume from this checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state["step"] < 0:
        raise DataError(f"{path}: not a checkpoint state (expected an object with a step count)")
    if not isinstance(state.get("plan", {}), dict):
        raise DataError(f"{path}: 'plan' must be an object")
    return state


def check_checkpoint(checkpoint: Path) -> dict:
    """Cheap checks of a checkpoint before anything heavy loads: its state and adapter headers."""
    state = read_state(checkpoint)
    for name in PEFT_FILES.values():
        if name == PEFT_WEIGHTS or (checkpoint / name).exists():
            safetensors_header(checkpoint / name)
    return state


def safetensors_header(path: Path) -> dict:
    """The metadata of a safetensors file; a one-line DataError when it is missing or not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own SafetensorError (not an OSError) on garbage
        raise DataError(f"{path}: not a readable safetensors adapter ({str(exc).splitlines()[0][:160]})") from None


def load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    safetensors_header(path)
    try:
        return load_file(str(path))
    except Exception as exc:  # a truncated body after a good header
        raise DataError(f"{path}: cannot read the checkpoint's adapter ({str(exc).splitlines()[0][:200]})") from None


def run_folder_of(path: Path) -> Path:
    """The run folder a ``--resume`` path names: a ``checkpoint-N`` folder or the ``lora_model``
    folder stand for the run that holds them."""
    if path.name.startswith(CHECKPOINT_PREFIX):
        return path.parent.parent
    return path.parent if path.name == LORA_DIR else path


def is_lora_run(folder: Path) -> bool:
    """A LoRA run folder: its saved settings and its adapter folder."""
    return (folder / "config.yaml").is_file() and (folder / LORA_DIR).is_dir()


def resume_checkpoint(reference: str, run_dir: Path) -> Optional[Path]:
    """The checkpoint ``--resume`` starts from: the ``checkpoint-N`` folder it names, else the run's
    newest one (None when the run wrote none yet)."""
    path = Path(reference).expanduser()
    if reference != "latest" and path.name.startswith(CHECKPOINT_PREFIX):
        if not (path / "state.json").is_file():
            raise ConfigError(f"--resume {reference}: not a complete checkpoint (no state.json)")
        return path
    found = checkpoints(run_dir / LORA_DIR)
    return found[-1] if found else None


def rng_states(trainer, g) -> dict:
    """This run's random states: one process's, or (collective: every process calls it) every
    process's gathered, rank 0's also at the top level."""
    import torch

    if trainer.world == 1:
        rng = {"generator": g.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return rng
    mine = {"generator": g.get_state(), "torch": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        mine["cuda_device"] = torch.cuda.get_rng_state(trainer.device)
    from kitaeru.core.lightning import quiet_lightning

    with quiet_lightning():
        gathered = {k: trainer.fabric.all_gather(v).cpu() for k, v in mine.items()}  # [world, n] each
    ranks = [{k: t[r].clone() for k, t in gathered.items()} for r in range(trainer.world)]
    return {**ranks[0], "world_size": trainer.world, "ranks": ranks}


def save_checkpoint(trainer, optimizer, lr_scheduler, g, plan: dict, epoch: int) -> Optional[Path]:
    """Write ``checkpoint-<step>`` (rank 0; the others hand over their random states and go on)."""
    import torch
    from safetensors.torch import save_file

    from .model import lora_state_dict, save_diffusers_weights

    step = trainer.state.step
    rng = rng_states(trainer, g)
    final = trainer.lora_dir / f"{CHECKPOINT_PREFIX}{step}"
    trainer.state.checkpoint_step = step
    trainer.state.last_checkpoint = str(final)
    if not trainer.fabric.is_global_zero:
        return None
    tmp = trainer.lora_dir / f".tmp-{CHECKPOINT_PREFIX}{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, module in trainer.modules.items():
            save_file(lora_state_dict(module), str(tmp / PEFT_FILES[name]))
        save_diffusers_weights(trainer.modules, tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng, tmp / "rng.pt")
        scaler = getattr(trainer.fabric._precision, "scaler", None)
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        s = trainer.state
        state = {"step": step, "epoch": epoch + 1, "epoch_loss_sum": s.epoch_loss_sum, "epoch_loss_count": s.epoch_loss_count,
                 "last_loss": s.last_loss, "plan": plan, "base_model": trainer.config.pretrained_model,
                 "world_size": trainer.world, "prediction_type": trainer.prediction_type}
        (tmp / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    limit = trainer.config.checkpoints_total_limit
    if limit:
        for old in checkpoints(trainer.lora_dir)[:-limit]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def restore(trainer, checkpoint: Path, optimizer, lr_scheduler, g) -> None:
    """Put the optimizer, schedule, random states and loop counters back as ``checkpoint`` saved them."""
    import torch

    from kitaeru.core.checkpoints import load_checkpoint

    def data(name: str) -> Any:  # checkpoints are data: pickled objects are refused, never run
        return load_checkpoint(checkpoint / name, trust_flag=None, what="checkpoint file")

    state = read_state(checkpoint)
    try:
        optimizer.load_state_dict(data("optimizer.pt"))
        lr_scheduler.load_state_dict(data("scheduler.pt"))
        rng = data("rng.pt")
        written_by = int(state.get("world_size", 1))
        if written_by != trainer.world:
            raise DataError(f"{checkpoint}: written by {written_by} process(es), this run has {trainer.world}; "
                            f"resume on the same number (--devices, --num-nodes) to continue the same data order")
        mine = rng["ranks"][trainer.rank] if trainer.world > 1 else rng
        g.set_state(mine["generator"])
        torch.set_rng_state(mine["torch"])
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, IndexError) as exc:
        raise DataError(f"{checkpoint}: cannot resume from this checkpoint ({str(exc).splitlines()[0][:200]})") from None
    if "cuda" in mine and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(mine["cuda"])
    if "cuda_device" in mine and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda_device"], trainer.device)
    scaler = getattr(trainer.fabric._precision, "scaler", None)
    if scaler is not None and (checkpoint / "scaler.pt").is_file():
        scaler.load_state_dict(data("scaler.pt"))
    s = trainer.state
    s.step = state["step"]
    s.epoch_loss_sum = float(state.get("epoch_loss_sum", 0.0))
    s.epoch_loss_count = int(state.get("epoch_loss_count", 0))
    s.last_loss = state.get("last_loss")
    s.last_checkpoint = str(checkpoint)
    s.checkpoint_step = s.step
