"""``kitaeru docclass train``: pick the run folder → build data → build model → fit (Lightning, OOM
ladder) → save, inside the run lifecycle.

The run folder (``<output-dir>/<name>``, ``<name>2``, ... or ``--run-name``) gets the kitaeru
evidence (``config.yaml``, ``results.csv``, ``training_result.json`` from the first second,
``tensorboard/``) and Lightning checkpoints ``weights/best.ckpt`` (by the monitored validation
metric) and ``weights/last.ckpt`` (for ``--resume``, Ctrl-C and the OOM ladder).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from pathlib import Path
from typing import Any, Iterator, Sequence

from kitaeru.core.console import info, warn
from kitaeru.core.device import DeviceInfo, GpuTier, resolve_device
from kitaeru.core.errors import ConfigError
from kitaeru.core.resources import Plan, fewer_workers, fit_with_oom_recovery, halve_batch, plan_resources
from kitaeru.core.run import RESULT_JSON, RESULTS_CSV, RunFolder, next_run_dir, refuse_used_run_dir, run_dir_under

from .checks import resume_folder
from .config import DocclassConfig, TrainConfig
from .data import DocclassData, build_data, make_loaders
from .metrics import pairwise_roc

# Batch per tier: the original DocClassifier trained lcnet_050 at 96 px with batch 256 on a large GPU.
TIER_TABLE: dict[GpuTier, dict[str, Any]] = {
    GpuTier.CPU: {"batch": 32, "workers": 1},
    GpuTier.LOW: {"batch": 64, "workers": 4},
    GpuTier.MEDIUM: {"batch": 128, "workers": 6},
    GpuTier.HIGH: {"batch": 256, "workers": 8},
    GpuTier.WORKSTATION: {"batch": 256, "workers": 8},
}
OOM_LADDER = (halve_batch(min_batch=8), fewer_workers())


def plan_for(config: DocclassConfig, device: DeviceInfo) -> Plan:
    """The tier's batch and workers, with the config's explicit values on top (capped by CPU count)."""
    plan = plan_resources(TIER_TABLE, device.tier, {"batch": config.train.batch_size, "workers": config.data.workers})
    if config.data.workers is None:
        plan["workers"] = min(int(plan["workers"]), max(0, (os.cpu_count() or 1) - 1))
    return plan


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
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from kitaeru.core.lightning import (
        EvidenceCallback, ctrl_c_stays_an_interrupt, distributed_trainer_kwargs, progress_callbacks, quiet_lightning,
        trainer_device_kwargs,
    )

    train_loader, val_loader = make_loaders(
        data, int(plan["batch"]), int(plan["workers"]), pin_memory=device.type == "cuda", seed=config.train.seed
    )
    checkpoint = ModelCheckpoint(
        dirpath=run.weights_dir, filename="best", monitor=config.train.monitor, mode="max", save_last=True,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    bars = progress_callbacks()
    last = run.weights_dir / "last.ckpt"
    with quiet_lightning():
        trainer = L.Trainer(
            **trainer_device_kwargs(device, precision=config.train.precision, **distributed_trainer_kwargs(config)),
            max_epochs=config.train.epochs,
            gradient_clip_val=config.train.gradient_clip or None,
            logger=TensorBoardLogger(save_dir=str(run.path), name="tensorboard", version="") if config.tracking.tensorboard else False,
            callbacks=[EvidenceCallback(run), checkpoint, *bars, *callbacks],
            default_root_dir=str(run.path),
            enable_progress_bar=bool(bars),
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=max(1, min(50, len(train_loader))),
        )
        with _cpu_threads_beside_workers(device, int(plan["workers"])), ctrl_c_stays_an_interrupt(trainer):
            trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume and last.is_file() else None,
                        weights_only=not getattr(config, "trust_checkpoint", False))
    return trainer, checkpoint


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


def config_for_resume(config: TrainConfig, run_dir: Path) -> TrainConfig:
    """The run's own ``config.yaml`` with the settings given on this command line on top."""
    from pydantic import ValidationError

    from kitaeru.core.config import deep_merge, format_validation_error, read_yaml

    saved = read_yaml(run_dir / "config.yaml")
    given = config.model_dump(mode="json", exclude_unset=True)
    try:
        base = TrainConfig.model_validate(saved)
        merged = TrainConfig.model_validate({**deep_merge(saved, given), "resume": str(run_dir)})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{run_dir / 'config.yaml'} + command line")) from None
    from .checkpoint import config_differences

    changed = config_differences(base, merged)
    if changed:
        raise ConfigError(f"--resume {run_dir}: its checkpoints are of another network ({'; '.join(changed)}); "
                          "start a new run for that")
    return merged


def new_run_dir(config: TrainConfig) -> Path:
    """``--run-name`` (refused when it holds a run, unless ``--exist-ok``) or the next free ``<name>N``."""
    root = Path(config.train.output_dir)
    if not config.run_name:
        return next_run_dir(root, config.name)
    run_dir = run_dir_under(root, config.run_name)
    refuse_used_run_dir(run_dir, exist_ok=config.exist_ok)
    # --exist-ok replaces the earlier run's evidence rather than mixing its rows into this one's.
    for stale in (run_dir / RESULTS_CSV, run_dir / RESULT_JSON, run_dir / "weights" / "last.ckpt", run_dir / "weights" / "best.ckpt"):
        stale.unlink(missing_ok=True)
    return run_dir


def run_training(config: TrainConfig, *, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train a document-feature network as ``config`` says; returns the run's ``training_result.json``.

    ``config.resume`` continues an existing run from its ``weights/last.ckpt`` (from the start when
    Ctrl-C came before the first checkpoint). ``callbacks`` are extra Lightning callbacks.
    """
    import lightning as L

    from .module import DocClassModule
    from .net import create_network

    from kitaeru.core.distributed import is_rank_zero, place, run_folder, share_run_dir, shared_run_dir

    handed = shared_run_dir()  # a process Lightning started for ddp joins rank 0's run folder
    resume_dir = resume_folder(config) if not handed else (Path(handed) if config.resume else None)
    if resume_dir is not None:
        config = config_for_resume(config, resume_dir)
        last = resume_dir / "weights" / "last.ckpt"
        if last.is_file():  # checkpoints are data: refused before the run starts unless trusted
            from kitaeru.core.checkpoints import check_checkpoint

            check_checkpoint(last, trust=config.trust_checkpoint)
    device = resolve_device(config.train.device)
    if handed:
        run_dir = Path(handed)
    elif not is_rank_zero() and config.run_name and resume_dir is None:  # torchrun/SLURM: rank 0 checks and cleans it
        run_dir = Path(config.train.output_dir) / config.run_name
    else:
        run_dir = resume_dir if resume_dir is not None else new_run_dir(config)
    if place().world_size > 1 and not handed and not (config.run_name or config.resume):
        raise ConfigError("several processes (torchrun/SLURM) share one run folder: give --run-name")
    run = run_folder(run_dir)
    if is_rank_zero():
        share_run_dir(run.path)
    previous = (run.read_result() or {}) if resume_dir is not None else {}
    run.save_config(config)
    from kitaeru.core.tracking import attach_reporter

    attach_reporter(run, config.tracking, config, recipe="docclass", resume=resume_dir is not None)  # before the model
    recoveries: list[dict] = list(previous.get("oom_recoveries") or [])
    carried = {"untrained_metrics": previous["untrained_metrics"]} if previous.get("untrained_metrics") else {}
    resume_command = f"kitaeru docclass train --resume {shlex.quote(str(run.path))}"
    with run.lifecycle(resume_command=resume_command, recipe="docclass", epochs_planned=config.train.epochs,
                       config_name=config.name, device=device.as_dict(), oom_recoveries=recoveries, **carried):
        L.seed_everything(config.train.seed, workers=True, verbose=False)
        data = build_data(config, run.path)
        run.record_skipped(data.pool.skipped)
        initial_plan = plan_for(config, device)
        info(f"device {device.device} (tier {device.tier.value}); batch {initial_plan['batch']}, workers {initial_plan['workers']}"
             + (f"; resuming {run.path}" if resume_dir is not None else f"; run folder {run.path}"))
        module = DocClassModule(config, data.num_classes, data.meta(), net=create_network(config))
        if device.type == "cuda":
            import torch

            module.net.to(memory_format=torch.channels_last)
            module.channels_last = True
        untrained = carried.get("untrained_metrics")
        if untrained is None:
            untrained = evaluate_untrained(module, data, device, initial_plan, config)
            run.heartbeat(untrained_metrics=dict(untrained))

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
        if not is_rank_zero():  # rank 0 writes the result
            return {"rank": place().rank, "run_dir": str(run.path)}
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else run.weights_dir / "last.ckpt"
        last = run.weights_dir / "last.ckpt"
        best_info = _stored_metrics(best)
        metrics = {k.removeprefix("val_"): v for k, v in (best_info.get("val_metrics") or {}).items() if k != "train_loss"}
        final = {k.removeprefix("val_"): v for k, v in module.val_metrics.items() if k != "train_loss"}
        run.write_result(
            "completed",
            run_dir=str(run.path),
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
            resources={"tier": device.tier.value, "initial_plan": initial_plan, "final_plan": plan},
            oom_recoveries=recoveries,
            epochs_completed=int(trainer.current_epoch),
        )
    return json.loads(run.result_json.read_text(encoding="utf-8"))
