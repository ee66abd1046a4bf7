"""``kitaeru docclass train``: pick the run folder → build data → build model → fit (Lightning, OOM
ladder) → save, inside the run lifecycle.

The run folder (``<output-dir>/<name>``, ``<name>2``, ... or ``--run-name``; chosen, and ``--resume``
resolved, by :func:`kitaeru.core.run_setup.open_run` through :func:`.checks.open_training_run`) gets the kitaeru
evidence (``config.yaml``, ``results.csv``, ``training_result.json`` from the first second,
``tensorboard/``) and Lightning checkpoints ``weights/best.ckpt`` (by the monitored validation
metric) and ``weights/last.ckpt`` (for ``--resume``, Ctrl-C and the OOM ladder).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from kitaeru.core.console import info, warn
from kitaeru.core.device import DeviceInfo, GpuTier, resolve_device
from kitaeru.core.errors import ConfigError
from kitaeru.core.resources import Plan, fewer_workers, fit_with_oom_recovery, halve_batch, plan_resources
from kitaeru.core.run import RESULT_JSON, RESULTS_CSV, RunFolder

from .checks import open_training_run
from .config import RECIPE_NAME, DocclassConfig, TrainConfig
from .data import DocclassData, build_data, make_loaders
from .metrics import pairwise_roc

if TYPE_CHECKING:  # pragma: no cover
    from kitaeru.core.run_setup import OpenedRun

# Batch per tier, keyed like the schema (train.batch_size, data.workers): the original DocClassifier
# trained lcnet_050 at 96 px with batch 256 on a large GPU.
TIER_TABLE: dict[GpuTier, dict[str, Any]] = {
    GpuTier.CPU: {"batch_size": 32, "workers": 1},
    GpuTier.LOW: {"batch_size": 64, "workers": 4},
    GpuTier.MEDIUM: {"batch_size": 128, "workers": 6},
    GpuTier.HIGH: {"batch_size": 256, "workers": 8},
    GpuTier.WORKSTATION: {"batch_size": 256, "workers": 8},
}
OOM_LADDER = (halve_batch(min_batch=8, key="batch_size"), fewer_workers())


def plan_for(config: DocclassConfig, device: DeviceInfo) -> Plan:
    """The tier's batch and workers, with the config's explicit values on top (capped by CPU count)."""
    plan = plan_resources(TIER_TABLE, device.tier, {"batch_size": config.train.batch_size, "workers": config.data.workers})
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
        data, int(plan["batch_size"]), int(plan["workers"]), pin_memory=device.type == "cuda", seed=config.train.seed
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

    _, val_loader = make_loaders(data, int(plan["batch_size"]), 0)
    module.net.to(device.device)
    features, labels = embed_batches(module.net, val_loader, device.device)
    module.net.to("cpu")
    return pairwise_roc(features, labels, threshold_fpr=config.train.threshold_fpr)


def _stored_metrics(path: Path) -> dict[str, Any]:
    from .checkpoint import read_checkpoint

    return read_checkpoint(path).info


def _prepare_run(opened: "OpenedRun[TrainConfig]") -> RunFolder:
    """The run folder, ready for the lifecycle: on rank 0 its config saved and handed to the
    processes Lightning starts; the tracker attached before the model loads."""
    from kitaeru.core.distributed import is_rank_zero, run_folder, share_run_dir
    from kitaeru.core.tracking import attach_reporter

    config = opened.config
    if is_rank_zero() and config.run_name and not opened.resumed:
        # --exist-ok replaces the earlier run's evidence rather than mixing its rows into this one's.
        weights = opened.run_dir / "weights"
        for stale in (opened.run_dir / RESULTS_CSV, opened.run_dir / RESULT_JSON, weights / "last.ckpt", weights / "best.ckpt"):
            stale.unlink(missing_ok=True)
    run = run_folder(opened.run_dir)
    if is_rank_zero():
        share_run_dir(run.path)
    run.save_config(config)
    attach_reporter(run, config.tracking, config, recipe=RECIPE_NAME, resume=opened.resumed)
    return run


def _refuse_untrusted_checkpoint(opened: "OpenedRun[TrainConfig]") -> None:
    """Checkpoints are data: a resumed run's last.ckpt is refused before the run starts unless trusted."""
    last = opened.run_dir / "weights" / "last.ckpt"
    if opened.resumed and last.is_file():
        from kitaeru.core.checkpoints import check_checkpoint

        check_checkpoint(last, trust=opened.config.trust_checkpoint)


def run_training(config: TrainConfig, *, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train a document-feature network as ``config`` says; returns the run's ``training_result.json``.

    ``config.resume`` continues an existing run from its ``weights/last.ckpt`` (from the start when
    Ctrl-C came before the first checkpoint). ``callbacks`` are extra Lightning callbacks.
    """
    from kitaeru.core.distributed import place, shared_run_dir

    if place().world_size > 1 and not shared_run_dir() and not (config.run_name or config.resume):
        raise ConfigError("several processes (torchrun/SLURM) share one run folder: give --run-name")
    opened = open_training_run(config)
    _refuse_untrusted_checkpoint(opened)
    config = opened.config
    device = resolve_device(config.train.device)
    run = _prepare_run(opened)
    previous = (run.read_result() or {}) if opened.resumed else {}
    recoveries: list[dict] = list(previous.get("oom_recoveries") or [])
    carried = {"untrained_metrics": previous["untrained_metrics"]} if previous.get("untrained_metrics") else {}
    with run.lifecycle(resume_command=opened.resume_command, recipe=RECIPE_NAME, epochs_planned=config.train.epochs,
                       config_name=config.name, device=device.as_dict(), oom_recoveries=recoveries, **carried):
        outcome = _train(config, run, device, resumed=opened.resumed, recoveries=recoveries,
                         untrained=carried.get("untrained_metrics"), callbacks=callbacks)
        if outcome is not None:  # not rank 0: rank 0 writes the result
            return outcome
    return json.loads(run.result_json.read_text(encoding="utf-8"))


def _train(config: TrainConfig, run: RunFolder, device: DeviceInfo, *, resumed: bool, recoveries: list[dict],
           untrained: dict[str, float] | None, callbacks: Sequence[Any]) -> dict[str, Any] | None:
    """Data, model, the untrained baseline and the fit (with the OOM ladder); rank 0 writes the
    result and gets None, another rank gets its rank and folder."""
    import lightning as L

    from kitaeru.core.distributed import is_rank_zero, place

    from .model import create_network
    from .module import DocClassModule

    L.seed_everything(config.train.seed, workers=True, verbose=False)
    data = build_data(config, run.path)
    run.record_skipped(data.pool.skipped)
    initial_plan = plan_for(config, device)
    info(f"device {device.device} (tier {device.tier.value}); batch {initial_plan['batch_size']}, workers {initial_plan['workers']}"
         + (f"; resuming {run.path}" if resumed else f"; run folder {run.path}"))
    module = DocClassModule(config, data.num_classes, data.meta(), net=create_network(config))
    if device.type == "cuda":
        import torch

        module.net.to(memory_format=torch.channels_last)
        module.channels_last = True
    if untrained is None:
        untrained = evaluate_untrained(module, data, device, initial_plan, config)
        run.heartbeat(untrained_metrics=dict(untrained))

    def attempt(plan: Plan, resume: bool):
        return fit(config, module, data, run, device, plan, resume=resume or resumed, callbacks=callbacks)

    (trainer, checkpoint), plan, steps = fit_with_oom_recovery(
        attempt,
        initial_plan,
        ladder=OOM_LADDER,
        enabled=config.train.oom_recovery,
        on_step=lambda step: warn(f"out of memory: {step.change}; resuming from the last checkpoint"),
    )
    recoveries += [s.as_dict() for s in steps]
    if not is_rank_zero():
        return {"rank": place().rank, "run_dir": str(run.path)}
    resources = {"tier": device.tier.value, "initial_plan": initial_plan, "final_plan": plan}
    _write_result(run, config, module, data, trainer, checkpoint, untrained=untrained, resources=resources,
                  recoveries=recoveries)
    return None


def _write_result(run: RunFolder, config: TrainConfig, module, data: DocclassData, trainer, checkpoint, *,
                  untrained: dict[str, float], resources: dict[str, Any], recoveries: list[dict]) -> None:
    """``training_result.json`` of a completed run: the best checkpoint's metrics and threshold."""
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else run.weights_dir / "last.ckpt"
    best_info = _stored_metrics(best)
    metrics = {k.removeprefix("val_"): v for k, v in (best_info.get("val_metrics") or {}).items() if k != "train_loss"}
    final = {k.removeprefix("val_"): v for k, v in module.val_metrics.items() if k != "train_loss"}
    run.write_result(
        "completed",
        run_dir=str(run.path),
        best_weights=str(best),
        last_weights=str(run.weights_dir / "last.ckpt"),
        monitor=config.train.monitor,
        best_epoch=best_info.get("epoch"),
        metrics=metrics,
        last_epoch_metrics=final,
        untrained_metrics=dict(untrained),
        unknown_threshold=best_info.get("unknown_threshold"),
        threshold_fpr=config.train.threshold_fpr,
        classes=data.meta(),
        templates_dir=data.pool.root,
        resources=resources,
        oom_recoveries=recoveries,
        epochs_completed=int(trainer.current_epoch),
    )
