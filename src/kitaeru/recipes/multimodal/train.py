"""Fit and evaluate: the whole ``kitaeru multimodal train`` run, evidence included.

build data (source → scenes → cached frozen features → split) → build model → epoch-0 recall →
fit (Lightning; ``weights/last.ckpt`` each epoch, ``weights/best.ckpt`` by mean validation recall)
→ evaluate the best epoch → save (projectors, query encoder, vector DB, UMAP) → upload.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from kitaeru.core.console import info, print_table, warn
from kitaeru.core.device import DeviceInfo, resolve_device
from kitaeru.core.errors import ConfigError
from kitaeru.core.run import RunFolder
from kitaeru.core.seed import seed_everything
from kitaeru.core.storage import output_dir as output_folder
from kitaeru.core.storage import upload_dir

from .config import MultimodalConfig
from .data import apply_cloud_defaults, load_scenes, split_indices
from .features import CACHE_DIR, EncoderSpec, FrozenEncoders, SceneFeatures, SeriesSpec, extract_features
from .model import METRIC_KEYS, FeatureTensors, SceneSearchModel, recall_by_direction
from .save import export_vector_db, save_weights

LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
MONITOR = "recall_mean"


class EpochEvidence(L.Callback):
    """One ``results.csv`` / TensorBoard row per epoch: loss, validation recall, lr, temperature."""

    def __init__(self, run: RunFolder):
        self.run = run
        self._started = time.time()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: SceneSearchModel) -> None:
        self._started = time.time()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: SceneSearchModel) -> None:
        losses = pl_module.step_losses
        row: dict[str, Any] = {
            "epoch": trainer.current_epoch + 1,
            "seconds": round(time.time() - self._started, 3),
            "train_loss": float(np.mean(losses)) if losses else None,
            **pl_module.val_metrics,
            "lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
            "temperature": float(1.0 / pl_module.logit_scale().item()),
        }
        self.run.log_epoch(row)


def _trainer_device(device: DeviceInfo) -> dict[str, Any]:
    if device.type == "cuda":
        index = int(device.device.split(":")[1]) if ":" in device.device else 0
        return {"accelerator": "gpu", "devices": [index], "precision": "bf16-mixed" if device.bf16 else "16-mixed"}
    if device.type == "mps":
        return {"accelerator": "mps", "devices": 1, "precision": "32-true"}
    return {"accelerator": "cpu", "devices": 1, "precision": "32-true"}


def _quiet_lightning() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*number of training batches.*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")  # resume


def _fresh_start(out: Path) -> None:
    """A new (not resumed) run in a used folder starts its evidence over."""
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
    """Run ``kitaeru multimodal train`` (or the ``--skip-training`` export) and return the result."""
    config = apply_cloud_defaults(config)
    device = resolve_device(config.device)
    if config.skip_training:
        from .export import export_trained

        return export_trained(config, device)
    with output_folder(config.output_dir) as out:
        result = _train_in(config, Path(out), device)
    if config.s3_output:
        info(f"uploading {config.output_dir} to {config.s3_output} ...")
        upload_dir(config.output_dir, config.s3_output)
        result["uploaded_to"] = config.s3_output
    return result


def _train_in(config: MultimodalConfig, out: Path, device: DeviceInfo) -> dict[str, Any]:
    last_ckpt = out / "weights" / LAST_CKPT
    previous = None
    if config.resume:
        if not last_ckpt.is_file():
            raise ConfigError(f"--resume: no checkpoint to continue from ({last_ckpt} not found)")
        previous = RunFolder(out, tensorboard=False).read_result() or {}
    else:
        out.mkdir(parents=True, exist_ok=True)
        _fresh_start(out)
    run = RunFolder(out)
    run.save_config(config)
    spec = EncoderSpec.from_config(config)
    common = {"output_dir": str(out), "device": device.as_dict(), "tier": device.tier.value,
              "epochs_requested": config.epochs}
    run.write_result("running", **common)
    try:
        return _fit_and_save(config, out, run, device, spec, previous, common)
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "failed"
        run.write_result(status, **common, error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                         resume_hint=f"kitaeru multimodal train --output-dir {out} --resume (plus the same data options)")
        raise
    finally:
        run.close()


def _fit_and_save(config, out: Path, run: RunFolder, device: DeviceInfo, spec: EncoderSpec, previous, common) -> dict[str, Any]:
    started = time.time()
    scene_set, feats = prepare_features(config, out, spec, device)
    run.record_skipped(scene_set.skipped + feats.skipped)
    if previous is not None and previous.get("features_key") not in (None, feats.key):
        raise ConfigError("--resume: the data or encoders differ from the interrupted run "
                          "(give the same options, or start afresh without --resume)")
    train_rows, val_rows = split_indices(len(feats), config.val_fraction, config.seed)
    train_feats, val_feats = _split_tensors(feats, train_rows), _split_tensors(feats, val_rows)
    info(f"training on {len(train_rows)} scenes ({len(train_feats.text)} captions), validating on {len(val_rows)}")
    run.write_result("running", **common, features_key=feats.key)

    seed_everything(config.seed)
    model = SceneSearchModel(
        feats.text_dim, feats.image_dim, config.embed_dim, feats.series_columns if config.include_timeseries else 0,
        config.temperature, config.learning_rate, config.weight_decay,
    )
    if model.series_encoder is not None:
        model.series_encoder.set_normalisation(train_feats.series)
    model.train_features, model.val_features = train_feats, val_feats

    resumed_from = None
    if config.resume:
        state = torch.load(last_ckpt_path(out), map_location="cpu", weights_only=False)
        resumed_from = int(state.get("epoch", -1)) + 1
        info(f"resuming after epoch {resumed_from} from {last_ckpt_path(out)}")
    before_row = next((r for r in run.rows if r.get("epoch") == 0), None)
    if before_row is None:
        with torch.no_grad():
            untrained_loss = float(model.contrastive_loss(val_feats, val_feats.collate(list(range(len(val_rows))))))
        before = {"val_loss": untrained_loss, **model.recall(val_feats)}
        run.log_epoch({"epoch": 0, "seconds": 0.0, "train_loss": None, **before, "lr": config.learning_rate,
                       "temperature": config.temperature})
    else:
        before = {k: float(before_row[k]) for k in (*METRIC_KEYS, "recall_mean") if before_row.get(k) is not None}

    checkpoint = _fit(config, out, run, model, train_feats, val_feats, device, resume=config.resume)

    best_path = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    best_epoch = None
    if best_path is not None and best_path.is_file():
        state = torch.load(best_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
        best_epoch = int(state.get("epoch", -1)) + 1
    model = model.cpu()
    after = model.recall(val_feats)
    files = save_weights(model, out, spec, feats, config.timeseries_steps)
    files.update(export_vector_db(model, feats, scene_set.scenes, out, data_dir=_data_label(config, scene_set.source),
                                  encoders={"text": spec.text_encoder, "image": spec.image_encoder}))
    result = {
        **common,
        "features_key": feats.key,
        "data": {"source": scene_set.source, "scenes": len(feats), "train_scenes": len(train_rows),
                 "val_scenes": len(val_rows), "captions": int(len(feats.text)),
                 "timeseries": bool(config.include_timeseries)},
        "features": {"cache_file": str(out / CACHE_DIR / f"features_{feats.key}.npz"), "from_cache": feats.from_cache,
                     "seconds": feats.seconds, "text_dim": feats.text_dim, "image_dim": feats.image_dim},
        "encoders": {"text": spec.text_encoder, "image": spec.image_encoder, "image_pretrained": spec.image_pretrained,
                     "image_weights": spec.image_weights},
        "recall_before": recall_by_direction(before),
        "recall_after": recall_by_direction(after),
        "recall_mean_before": round(before.get("recall_mean", 0.0), 4),
        "recall_mean_after": round(after["recall_mean"], 4),
        "best_epoch": best_epoch,
        "best_checkpoint": str(best_path) if best_path else None,
        "last_checkpoint": str(last_ckpt_path(out)),
        "resumed_from_epoch": resumed_from,
        "final_temperature": round(float(1.0 / model.logit_scale().item()), 5),
        "files": files,
        "fit_seconds": round(time.time() - started, 3),
    }
    run.write_result("completed", **result)
    _summary(before, after, best_epoch, files)
    return run.read_result() or result


def last_ckpt_path(out: Path) -> Path:
    return out / "weights" / LAST_CKPT


def _data_label(config: MultimodalConfig, source: str) -> str:
    from kitaeru.core.storage import is_remote

    return source if is_remote(source) else str(Path(source).resolve())


def _fit(config, out: Path, run: RunFolder, model: SceneSearchModel, train_feats: FeatureTensors,
         val_feats: FeatureTensors, device: DeviceInfo, *, resume: bool):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from torch.utils.data import DataLoader

    _quiet_lightning()
    generator = torch.Generator().manual_seed(config.seed)
    train_loader = DataLoader(list(range(len(train_feats.image))), batch_size=min(config.batch_size, len(train_feats.image)),
                              shuffle=True, generator=generator, collate_fn=train_feats.collate)
    val_loader = DataLoader([list(range(len(val_feats.image)))], batch_size=None, collate_fn=val_feats.collate)
    checkpoint = ModelCheckpoint(
        dirpath=str(out / "weights"), filename="best", monitor=MONITOR, mode="max", save_top_k=1, save_last=True,
        auto_insert_metric_name=False, enable_version_counter=False,
    )
    trainer = L.Trainer(
        max_epochs=config.epochs, **_trainer_device(device), logger=False, callbacks=[checkpoint, EpochEvidence(run)],
        enable_progress_bar=not os.environ.get("KITAERU_NO_PROGRESS"), enable_model_summary=False, num_sanity_val_steps=0,
        log_every_n_steps=1, default_root_dir=str(out), deterministic=False,
    )
    trainer.fit(model, train_loader, val_loader, ckpt_path=str(last_ckpt_path(out)) if resume else None)
    if trainer.interrupted:
        raise KeyboardInterrupt
    return checkpoint


def _summary(before: dict[str, float], after: dict[str, float], best_epoch: int | None, files: dict[str, str]) -> None:
    rows = [(key, before.get(key, float("nan")), after[key]) for key in (*METRIC_KEYS, "recall_mean")]
    print_table(f"validation recall: untrained → best epoch {best_epoch}", ["metric", "before", "after"], rows)
    print_table("files written", ["file", "path"], sorted(files.items()))
    if after.get("recall_mean", 0.0) <= before.get("recall_mean", 0.0):
        warn("validation recall did not improve over the untrained start (more data or epochs, or a higher --learning-rate, may help)")

