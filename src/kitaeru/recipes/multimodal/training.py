"""Fit and evaluate: the whole ``kitaeru multimodal train`` run, inside the run lifecycle.

build data (source → scenes → cached frozen features → split) → build model → epoch-0 recall →
fit (Lightning; ``weights/last.ckpt`` each epoch, ``weights/best.ckpt`` by mean validation recall)
→ evaluate the best epoch → save (projectors, query encoder, vector DB, UMAP) → upload.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from kitaeru.core.checkpoints import check_checkpoint, load_checkpoint
from kitaeru.core.console import info, print_table, warn
from kitaeru.core.device import DeviceInfo, resolve_device
from kitaeru.core.distributed import is_rank_zero, place, run_folder, share_run_dir
from kitaeru.core.errors import ConfigError
from kitaeru.core.lightning import (
    EvidenceCallback, distributed_trainer_kwargs, progress_callbacks, quiet_lightning, trainer_device_kwargs,
)
from kitaeru.core.run import RunFolder, holds_run
from kitaeru.core.run_setup import resume_command
from kitaeru.core.seed import seed_everything
from kitaeru.core.remote import output_dir as output_folder
from kitaeru.core.remote import upload_run_dir
from kitaeru.core.tracking import attach_reporter

from .config import LAST_CHECKPOINT, LAYOUT, MultimodalConfig
from .data import load_scenes, split_indices
from .export import data_source_label, export_vector_db, save_weights
from .features import CACHE_DIR, EncoderSpec, FrozenEncoders, SceneFeatures, SeriesSpec, extract_features
from .model import METRIC_KEYS, FeatureTensors, SceneSearchModel, recall_by_direction

MONITOR = "recall_mean"


def _fresh_start(out: Path) -> None:
    """``--exist-ok``: a new run in a used folder starts its evidence and checkpoints over."""
    for name in ("results.csv", "training_result.json"):
        (out / name).unlink(missing_ok=True)
    weights = out / "weights"
    if weights.is_dir():
        for ckpt in weights.glob("*.ckpt"):
            ckpt.unlink()
    tensorboard = out / "tensorboard"
    if tensorboard.is_dir():
        for event in tensorboard.glob("events.out.tfevents.*"):
            event.unlink()


def _epoch_extra(trainer: L.Trainer, module: SceneSearchModel) -> dict[str, Any]:
    """The recipe's numbers of a results.csv row: the epoch's mean training loss and the temperature."""
    losses = module.step_losses
    return {"train_loss": float(np.mean(losses)) if losses else None,
            "temperature": float(1.0 / module.logit_scale().item())}


def prepare_features(config: MultimodalConfig, out: Path, spec: EncoderSpec, device: DeviceInfo):
    """Scenes of the configured source and their (cached) frozen features."""
    scene_set = load_scenes(config, out)
    info(f"{len(scene_set.scenes)} scenes from {scene_set.source}" + (f" ({len(scene_set.skipped)} skipped)" if scene_set.skipped else ""))
    feats = extract_features(
        scene_set.scenes, FrozenEncoders(spec, device.device),
        series=SeriesSpec(config.include_timeseries, config.timeseries_steps, tuple(config.mcap_topics)),
        cache_dir=out / CACHE_DIR, workers=config.workers, batch_size=config.encode_batch_size,
    )
    info(("features from cache" if feats.from_cache else "features encoded") + f" in {feats.seconds:.1f}s (key {feats.key})")
    return scene_set, feats


def _split_tensors(feats: SceneFeatures, rows: np.ndarray) -> FeatureTensors:
    """Features of the scenes ``rows`` (caption owners renumbered to the subset)."""
    position = -np.ones(len(feats.image), dtype=np.int64)
    position[rows] = np.arange(len(rows))
    keep = position[feats.owner] >= 0
    series = feats.series[rows] if feats.series is not None else None
    return FeatureTensors.build(feats.text[keep], position[feats.owner[keep]], feats.image[rows], series)


def train_scene_search(config: MultimodalConfig) -> dict[str, Any]:
    """Run ``kitaeru multimodal train`` (or the ``--skip-training`` export) and return the result.

    ``config`` has its cloud defaults applied and its cheap checks done (see the recipe's ``train``).
    """
    device = resolve_device(config.device)
    if config.skip_training:
        from .export import export_trained

        return export_trained(config, device)
    with output_folder(config.output_dir) as out:
        result = _train_in(config, Path(out), device)
    if config.s3_output:
        info(f"uploading {config.output_dir} to {config.s3_output} ...")
        upload_run_dir(config.output_dir, config.s3_output, setting="--s3-output")  # a failed upload: status failed
        result["uploaded_to"] = config.s3_output
    return result


def _train_in(config: MultimodalConfig, out: Path, device: DeviceInfo) -> dict[str, Any]:
    previous = None
    from_checkpoint = False
    if config.resume:
        if last_ckpt_path(out).is_file():
            # checkpoints are data: one that needs arbitrary unpickling is refused before anything runs
            check_checkpoint(last_ckpt_path(out), trust=config.trust_checkpoint)
            from_checkpoint = True
        elif not holds_run(out):
            raise ConfigError(f"--resume: no checkpoint to continue from ({last_ckpt_path(out)} not found)")
        else:
            info(f"--resume: {out} was stopped before its first checkpoint; training starts at epoch 1")
        previous = RunFolder(out, tensorboard=False).read_result() or {}
    elif config.exist_ok and is_rank_zero():
        _fresh_start(out)
    # only rank 0 writes the evidence; the processes Lightning starts for ddp learn the folder from it
    run = run_folder(out, tensorboard=config.tracking.tensorboard)
    run.save_config(config)
    if is_rank_zero():
        share_run_dir(out)
    spec = EncoderSpec.from_config(config)
    common = {"output_dir": str(out), "device": device.as_dict(), "tier": device.tier.value,
              "epochs_requested": config.epochs}
    attach_reporter(run, config.tracking, config, recipe="multimodal", resume=bool(config.resume))  # before any model loads
    # the folder written (a URL's local staging copy too): the command continues this run
    with run.lifecycle(resume_command=resume_command(LAYOUT.recipe, out), recipe="multimodal", epochs_planned=config.epochs, **common):
        result = _fit_and_save(config, out, run, device, spec, previous, from_checkpoint)
        run.write_result("completed", **result)
    return (run.read_result() or result) if is_rank_zero() else result


def _fit_and_save(config, out: Path, run: RunFolder, device: DeviceInfo, spec: EncoderSpec, previous,
                  from_checkpoint: bool) -> dict[str, Any]:
    started = time.time()
    scene_set, feats = prepare_features(config, out, spec, device)
    run.record_skipped(scene_set.skipped + feats.skipped)
    if previous is not None and previous.get("features_key") not in (None, feats.key):
        raise ConfigError("--resume: the data or encoders differ from the interrupted run "
                          "(give the same options, or start afresh without --resume)")
    train_rows, val_rows = split_indices(len(feats), config.val_fraction, config.seed)
    train_feats, val_feats = _split_tensors(feats, train_rows), _split_tensors(feats, val_rows)
    info(f"training on {len(train_rows)} scenes ({len(train_feats.text)} captions), validating on {len(val_rows)}")
    run.heartbeat(features_key=feats.key)

    seed_everything(config.seed)
    model = SceneSearchModel(
        feats.text_dim, feats.image_dim, config.embed_dim, feats.series_columns if config.include_timeseries else 0,
        config.temperature, config.learning_rate, config.weight_decay,
    )
    if model.series_encoder is not None:
        model.series_encoder.set_normalisation(train_feats.series)
    model.train_features, model.val_features = train_feats, val_feats

    resumed_from = None
    if from_checkpoint:
        state = load_checkpoint(last_ckpt_path(out), trust=config.trust_checkpoint)
        resumed_from = int(state.get("epoch", -1)) + 1
        info(f"resuming after epoch {resumed_from} from {last_ckpt_path(out)}")
    before = _untrained_start(config, run, model, val_feats)
    checkpoint = _fit(config, out, run, model, train_feats, val_feats, device, resume=from_checkpoint)
    if not is_rank_zero():  # rank 0 evaluates the best epoch and writes the artefacts
        return {"rank": place().rank, "features_key": feats.key}

    best_path = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    best_epoch = None
    if best_path is not None and best_path.is_file():
        state = load_checkpoint(best_path, trust=config.trust_checkpoint)
        model.load_state_dict(state["state_dict"])
        best_epoch = int(state.get("epoch", -1)) + 1
    model = model.cpu()
    after = model.recall(val_feats)
    files = save_weights(model, out, spec, feats, config.timeseries_steps)
    files.update(export_vector_db(model, feats, scene_set.scenes, out, data_dir=data_source_label(scene_set.source),
                                  encoders={"text": spec.text_encoder, "image": spec.image_encoder}))
    if after.get("recall_mean", 0.0) <= before.get("recall_mean", 0.0):
        warn("validation recall did not improve over the untrained start (more data or epochs, or a higher --learning-rate, may help)")
    return {
        "features_key": feats.key,
        "data": {"source": data_source_label(scene_set.source), "scenes": len(feats), "train_scenes": len(train_rows),
                 "val_scenes": len(val_rows), "captions": int(len(feats.text)),
                 "timeseries": bool(config.include_timeseries)},
        "features": {"cache_file": str(out / CACHE_DIR / f"features_{feats.key}.npz"), "from_cache": feats.from_cache,
                     "reused_chunks": feats.reused_chunks, "seconds": feats.seconds,
                     "text_dim": feats.text_dim, "image_dim": feats.image_dim},
        "encoders": {"text": spec.text_encoder, "image": spec.image_encoder, "image_pretrained": spec.image_pretrained,
                     "image_weights": spec.image_weights},
        "metrics": {k: round(float(v), 4) for k, v in after.items()},
        "metrics_before": {k: round(float(v), 4) for k, v in before.items() if k != "val_loss"},
        "recall_before": recall_by_direction(before),
        "recall_after": recall_by_direction(after),
        "recall_mean_before": round(before.get("recall_mean", 0.0), 4),
        "recall_mean_after": round(after["recall_mean"], 4),
        "best_epoch": best_epoch,
        "best_weights": str(best_path) if best_path else None,
        "last_weights": str(last_ckpt_path(out)),
        "best_checkpoint": str(best_path) if best_path else None,
        "last_checkpoint": str(last_ckpt_path(out)),
        "resumed_from_epoch": resumed_from,
        "final_temperature": round(float(1.0 / model.logit_scale().item()), 5),
        "files": files,
        "fit_seconds": round(time.time() - started, 3),
    }


def _untrained_start(config: MultimodalConfig, run: RunFolder, model: SceneSearchModel,
                     val_feats: FeatureTensors) -> dict[str, float]:
    """Validation loss and recall before training (results.csv's epoch 0); a resumed run reads the
    row it wrote then instead of measuring its trained model."""
    before_row = next((r for r in run.rows if r.get("epoch") == 0), None)
    if before_row is not None:
        return {k: float(before_row[k]) for k in (*METRIC_KEYS, "recall_mean") if before_row.get(k) is not None}
    with torch.no_grad():
        everything = val_feats.collate(list(range(len(val_feats.image))))
        untrained_loss = float(model.contrastive_loss(val_feats, everything))
    before = {"val_loss": untrained_loss, **model.recall(val_feats)}
    run.log_epoch({"epoch": 0, "seconds": 0.0, "train_loss": None, **before, "lr": config.learning_rate,
                   "temperature": config.temperature})
    return before


def last_ckpt_path(out: Path) -> Path:
    return out / LAST_CHECKPOINT


def _fit(config, out: Path, run: RunFolder, model: SceneSearchModel, train_feats: FeatureTensors,
         val_feats: FeatureTensors, device: DeviceInfo, *, resume: bool):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(list(range(len(train_feats.image))), batch_size=min(config.batch_size, len(train_feats.image)),
                              shuffle=True, generator=generator, collate_fn=train_feats.collate)
    val_loader = DataLoader([list(range(len(val_feats.image)))], batch_size=None, collate_fn=val_feats.collate)
    checkpoint = ModelCheckpoint(
        dirpath=str(out / "weights"), filename="best", monitor=MONITOR, mode="max", save_top_k=1, save_last=True,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    progress = progress_callbacks()
    # Lightning logs nothing itself (logger=False): the evidence callback writes results.csv and TensorBoard.
    evidence = EvidenceCallback(run, log_tensorboard=True, extra=_epoch_extra)
    with quiet_lightning():
        trainer = L.Trainer(
            max_epochs=config.epochs, **trainer_device_kwargs(device, **distributed_trainer_kwargs(config)), logger=False,
            callbacks=[checkpoint, evidence, *progress], enable_progress_bar=bool(progress), enable_model_summary=False,
            num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=str(out), deterministic=False,
        )
        try:
            trainer.fit(model, train_loader, val_loader, ckpt_path=str(last_ckpt_path(out)) if resume else None,
                        weights_only=not config.trust_checkpoint)
        except SystemExit:
            # Lightning turns Ctrl-C into "graceful shutdown" + sys.exit(1), with SIGINT left ignored:
            # give the run lifecycle the interruption it stands for.
            if trainer.interrupted:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt from None
            raise
    if trainer.interrupted:
        raise KeyboardInterrupt
    return checkpoint


def summary(result: dict[str, Any]) -> None:
    """The human summary of a training result on stdout: recall before → after, files written."""
    if "last_export" in result or "recall_all_scenes" in result:
        export = result.get("last_export", result)
        rows = [(f"{d}_R@{k}", export["recall_all_scenes"][name][f"R@{k}"])
                for name, d in (("text_to_image", "t2i"), ("image_to_text", "i2t")) for k in (1, 5, 10)]
        print_table("recall of the trained projectors on all scenes", ["metric", "value"], rows)
        print_table("files written", ["file", "path"], sorted(export["files"].items()))
        return
    before, after = result.get("metrics_before", {}), result.get("metrics", {})
    rows = [(key, before.get(key, float("nan")), after.get(key, float("nan"))) for key in (*METRIC_KEYS, "recall_mean")]
    print_table(f"validation recall: untrained → best epoch {result.get('best_epoch')}", ["metric", "before", "after"], rows)
    print_table("files written", ["file", "path"], sorted((result.get("files") or {}).items()))
