"""``kitaeru docclass train``: build data → build model → fit (Lightning, OOM ladder) → evaluate → save.

The run folder gets the kitaeru evidence (``config.yaml``, ``results.csv``, ``training_result.json``,
``tensorboard/``) and Lightning checkpoints ``weights/best.ckpt`` (by the monitored validation
metric) and ``weights/last.ckpt`` (for resume and for the OOM ladder).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from kitaeru.core.console import info, warn
from kitaeru.core.device import DeviceInfo, GpuTier, resolve_device
from kitaeru.core.errors import ConfigError, KitaeruError
from kitaeru.core.resources import Plan, fewer_workers, fit_with_oom_recovery, halve_batch, plan_resources
from kitaeru.core.run import RunFolder, timestamped_dir
from kitaeru.core.storage import is_remote

from .config import DocclassConfig
from .data import DocclassData, build_data, make_loaders
from .metrics import pairwise_roc

# Batch per tier: the seed trained lcnet_050 at 96 px with batch 256 on a large GPU.
TIER_TABLE: dict[GpuTier, dict[str, Any]] = {
    GpuTier.CPU: {"batch": 32, "workers": 1},
    GpuTier.LOW: {"batch": 64, "workers": 4},
    GpuTier.MEDIUM: {"batch": 128, "workers": 6},
    GpuTier.HIGH: {"batch": 256, "workers": 8},
    GpuTier.WORKSTATION: {"batch": 256, "workers": 8},
}
OOM_LADDER = (halve_batch(min_batch=8), fewer_workers())


@dataclass
class TrainOutcome:
    run_dir: Path
    result: dict[str, Any]


def plan_for(config: DocclassConfig, device: DeviceInfo) -> Plan:
    """The tier's batch and workers, with the config's explicit values on top (capped by CPU count)."""
    plan = plan_resources(TIER_TABLE, device.tier, {"batch": config.train.batch_size, "workers": config.data.workers})
    if config.data.workers is None:
        plan["workers"] = min(int(plan["workers"]), max(0, (os.cpu_count() or 1) - 1))
    return plan


def _accelerator(device: DeviceInfo) -> tuple[str, Any]:
    if device.type == "cuda":
        index = int(device.device.split(":")[1]) if ":" in device.device else 0
        return "gpu", [index]
    if device.type == "mps":
        return "mps", 1
    return "cpu", 1


def fit(
    config: DocclassConfig,
    module,
    data: DocclassData,
    run: RunFolder,
    device: DeviceInfo,
    plan: Plan,
    *,
    resume: bool,
    callbacks: Sequence[Any] = (),
):
    """One Lightning fit with the plan's batch/workers; ``resume`` continues from ``weights/last.ckpt``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    from kitaeru.core.lightning import EvidenceCallback


    train_loader, val_loader = make_loaders(
        data, int(plan["batch"]), int(plan["workers"]), pin_memory=device.type == "cuda", seed=config.train.seed
    )
    checkpoint = ModelCheckpoint(
        dirpath=run.weights_dir, filename="best", monitor=config.train.monitor, mode="max", save_last=True,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    accelerator, devices = _accelerator(device)
    progress = not os.environ.get("KITAERU_NO_PROGRESS")
    bars = [RichProgressBar(console_kwargs={"stderr": True})] if progress else []  # stdout stays for --json
    last = run.weights_dir / "last.ckpt"
    with _quiet_lightning():
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=devices,
            max_epochs=config.train.epochs,
            precision=config.train.precision,
            gradient_clip_val=config.train.gradient_clip or None,
            logger=TensorBoardLogger(save_dir=str(run.path), name="tensorboard", version=""),
            callbacks=[EvidenceCallback(run), checkpoint, *bars, *callbacks],
            default_root_dir=str(run.path),
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=max(1, min(50, len(train_loader))),
        )
        with _cpu_threads_beside_workers(device, int(plan["workers"])):
            trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume and last.is_file() else None)
    return trainer, checkpoint


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Keep Lightning's start-up notices (accelerator listing, tips) and its internal deprecation
    warnings out of the user's terminal; real warnings and errors still show."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _cpu_threads_beside_workers(device: DeviceInfo, workers: int) -> Iterator[None]:
    """On CPU, leave the loader workers their cores: oversubscribed intra-op threads spin and stall
    (a training step of this small network is several times slower with one thread too many)."""
    import torch

    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(before, (os.cpu_count() or 1) - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluate_untrained(module, data: DocclassData, device: DeviceInfo, plan: Plan, config: DocclassConfig) -> dict[str, float]:
    """The validation metrics of the network before any training (the baseline a run must beat)."""
    from .module import embed_batches

    _, val_loader = make_loaders(data, int(plan["batch"]), 0)
    module.net.to(device.device)
    features, labels = embed_batches(module.net, val_loader, device.device)
    module.net.to("cpu")
    return pairwise_roc(features, labels, threshold_fpr=config.train.threshold_fpr)


def _stored_metrics(path: Path) -> dict[str, Any]:
    from .checkpoint import read_checkpoint

    return read_checkpoint(path).info


def train(
    config: DocclassConfig,
    *,
    cfg_name: str | None = None,
    resume_dir: str | os.PathLike | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainOutcome:
    """Train a document-feature network as ``config`` says; returns the run folder and its result.

    ``resume_dir`` continues an existing run from its ``weights/last.ckpt``. ``callbacks`` are
    extra Lightning callbacks (appended after kitaeru's own).
    """
    import lightning as L

    from .module import DocClassModule, create_network

    device = resolve_device(config.train.device)
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        if not (run_dir / "weights" / "last.ckpt").is_file():
            raise KitaeruError(f"--resume: {run_dir} has no weights/last.ckpt to resume from")
    elif is_remote(config.train.output_dir):
        raise ConfigError(
            f"train.output_dir: '{config.train.output_dir}' is a URL; runs are written to a local folder "
            "(copy the run folder to the bucket afterwards)"
        )
    else:
        run_dir = timestamped_dir(config.train.output_dir, config.name)
    run = RunFolder(run_dir)
    previous = run.read_result() or {}
    run.save_config(config)
    try:
        L.seed_everything(config.train.seed, workers=True, verbose=False)
        data = build_data(config, run.path)
        run.record_skipped(data.pool.skipped)
        initial_plan = plan_for(config, device)
        info(f"device {device.device} (tier {device.tier.value}); batch {initial_plan['batch']}, workers {initial_plan['workers']}")
        module = DocClassModule(config, data.num_classes, data.meta(), net=create_network(config))
        if device.type == "cuda":
            import torch

            module.net.to(memory_format=torch.channels_last)
            module.channels_last = True
        untrained = previous.get("untrained_metrics") if resume_dir is not None else None
        if untrained is None:
            untrained = evaluate_untrained(module, data, device, initial_plan, config)
        recoveries: list[dict] = list(previous.get("oom_recoveries") or [])

        def attempt(plan: Plan, resume: bool):
            return fit(config, module, data, run, device, plan, resume=resume or resume_dir is not None, callbacks=callbacks)

        (trainer, checkpoint), plan, steps = fit_with_oom_recovery(
            attempt,
            initial_plan,
            ladder=OOM_LADDER,
            enabled=config.train.oom_recovery,
            on_step=lambda step: warn(f"out of memory: {step.change}; resuming from the last checkpoint"),
        )
        recoveries += [s.as_dict() for s in steps]
    except BaseException as exc:
        run.write_result("failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                         device=device.as_dict(), config_name=cfg_name)
        run.close()
        raise

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else run.weights_dir / "last.ckpt"
    last = run.weights_dir / "last.ckpt"
    best_info = _stored_metrics(best)
    metrics = {k.removeprefix("val_"): v for k, v in (best_info.get("val_metrics") or {}).items() if k != "train_loss"}
    final = {k.removeprefix("val_"): v for k, v in module.val_metrics.items() if k != "train_loss"}
    result = run.write_result(
        "completed",
        config_name=cfg_name,
        best_weights=str(best),
        last_weights=str(last),
        monitor=config.train.monitor,
        best_epoch=best_info.get("epoch"),
        metrics=metrics,
        last_epoch_metrics=final,
        untrained_metrics=dict(untrained),
        unknown_threshold=best_info.get("unknown_threshold"),
        threshold_fpr=config.train.threshold_fpr,
        classes=data.meta(),
        templates_dir=data.pool.root,
        device=device.as_dict(),
        resources={"tier": device.tier.value, "initial_plan": initial_plan, "final_plan": plan},
        oom_recoveries=recoveries,
        epochs_completed=int(trainer.current_epoch),
    )
    run.close()
    return TrainOutcome(run_dir=run.path, result=json.loads(Path(result).read_text(encoding="utf-8")))
