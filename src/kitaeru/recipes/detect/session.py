"""One training run on Ultralytics inside the out-of-memory ladder, and its result file.

:class:`TrainingSession` works inside the run's :meth:`~kitaeru.core.run.RunFolder.lifecycle`
(which owns the final ``failed`` / ``interrupted`` status and the resume line): it starts the
TensorBoard server, walks :func:`kitaeru.core.resources.fit_with_oom_recovery` with the detect
ladder (halve batch ≥ 4 → smaller image → no RAM cache → fewer workers → smaller model), resumes
each retry from ``weights/last.pt`` (a fresh start only when there is no checkpoint yet or the
model itself changed), and keeps ``training_result.json`` current: ``running`` with the plan as
soon as the run starts and after every epoch (so an interrupted run resumes with the same plan),
then ``completed``.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from kitaeru.core.console import info, warn
from kitaeru.core.errors import DataError, KitaeruError
from kitaeru.core.resources import (
    OomRecovery,
    Plan,
    disable_cache,
    fewer_workers,
    fit_with_oom_recovery,
    halve_batch,
    is_out_of_memory,
    smaller_image,
    smaller_model,
)
from kitaeru.core.run import RunFolder

from .config import IMAGE_SIZES, MODEL_CHAIN, TrainConfig
from .continuation import LAST, continue_command
from .evidence import FINAL_METRICS, ULTRALYTICS_CSV, Attempt, EvidenceCallbacks, TrainingState
from .model_source import check_weights, load_weights, resolve_model
from .evaluation import ultralytics_device_arg

BEST = "weights/best.pt"
# Arguments Ultralytics lets a resumed run change (the ladder's knobs among them).
RESUME_ARGS = ("batch", "imgsz", "workers", "cache", "device", "save_dir", "plots", "patience", "save_period")


def named_model_step() -> Callable[[Plan], "tuple[Plan, str] | None"]:
    """The core's smaller-model step, limited to models it can really name (a missing custom path is no step)."""
    inner = smaller_model(MODEL_CHAIN)

    def step(plan: Plan):
        applied = inner(plan)
        if applied is None:
            return None
        new_model = str(applied[0]["model"])
        if ("/" in new_model or "\\" in new_model) and not Path(new_model).exists():
            return None
        return applied

    step.__name__ = "smaller_model"
    return step


def detect_ladder() -> tuple[Callable, ...]:
    """Halve batch (≥ 4) → smaller image → no RAM cache → fewer workers → smaller named model."""
    return (halve_batch(4), smaller_image(IMAGE_SIZES), disable_cache(), fewer_workers(), named_model_step())


def checkpoint_is_resumable(path: Path, *, trust: bool = False) -> tuple[bool, int]:
    """Whether ``last.pt`` holds an unfinished run (epoch and optimizer kept), and its epoch (1-based).

    Loaded as data (:func:`.model_source.load_weights`): a file that names code outside the
    Ultralytics model classes is refused (:class:`ConfigError` naming ``--trust-checkpoint``)
    unless ``trust``; an unreadable one is a :class:`DataError`.
    """
    ckpt = load_weights(path, trust=trust, what="checkpoint")
    if not isinstance(ckpt, dict):
        raise DataError(f"{path}: not an Ultralytics checkpoint (a {type(ckpt).__name__}, not a dict)")
    epoch = int(ckpt.get("epoch", -1))
    return (epoch >= 0 and ckpt.get("optimizer") is not None), epoch + 1


class TrainingSession:
    """See module doc. ``fields`` are extra result fields computed before training starts."""

    def __init__(
        self,
        config: TrainConfig,
        run: RunFolder,
        *,
        resource_plan: dict[str, Any],
        ultralytics_args: dict[str, Any],
        data_yaml: Path,
        expected_images: Mapping[str, list[Path]],
        fields: dict[str, Any],
        callbacks: Mapping[str, Iterable[Callable]] | None = None,
        previous: Mapping[str, Any] | None = None,
    ):
        self.config = config
        self.run = run
        self.resource_plan = resource_plan
        self.ultralytics_args = ultralytics_args
        self.data_yaml = data_yaml
        self.fields = fields
        self.extra_callbacks = callbacks or {}
        self.state = TrainingState()
        self.evidence = EvidenceCallbacks(run, self.state, strip_analytics=config.offline, expected_images=expected_images)
        self.previous = dict(previous or {})
        self.oom_recoveries: list[dict[str, Any]] = list(self.previous.get("oom_recoveries", []))
        self.earlier_attempts: list[dict[str, Any]] = list(self.previous.get("attempts", []))
        self.earlier_minutes = float(self.previous.get("training_time_minutes", 0.0) or 0.0)
        self.current_plan: Plan = dict(resource_plan["final"])
        self.started = time.time()
        self.tensorboard = None
        self.export: dict[str, Any] | None = None
        self.llrd = None  # the LlrdCallback of the current attempt
        if self.previous:
            self.state.trained_model = self.current_plan["model"]
            self.state.last_epoch = max((int(r.get("epoch") or 0) for r in run.rows), default=0)

    # ---- the run ---------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Start the TensorBoard server; returns the result fields the lifecycle starts with."""
        self._start_tensorboard()
        fields = self.fields_now()
        fields.pop("epochs_completed")  # counted from results.csv by the run folder
        fields.pop("resume_command")  # the lifecycle's own argument
        return fields

    def execute(self, *, resume_first: bool = False) -> dict[str, Any]:
        """Train (through the OOM ladder), export if asked, and write the final result.

        Runs inside ``run.lifecycle(..., **session.start())``: on an error the fields are
        refreshed and the lifecycle writes ``failed`` / ``interrupted`` with them.
        """
        first = [resume_first]

        def fit(plan: Plan, resume: bool) -> None:
            wants_resume = resume or first[0]
            first[0] = False
            self._fit_once(plan, wants_resume)

        try:
            _, final_plan, _ = fit_with_oom_recovery(
                fit,
                self.current_plan,
                ladder=detect_ladder(),
                max_steps=self.config.oom_max_steps,
                enabled=self.config.oom_recovery,
                on_step=self._on_oom_step,
            )
            self.current_plan = final_plan
            self._record_ultralytics_drops()
            if self.config.export:
                self._export()
        except BaseException:
            self.write("running")  # the final status (lifecycle) carries the attempts and epochs so far
            raise
        finally:
            self.stop_tensorboard()
        return self.write("completed")

    def _fit_once(self, plan: Plan, resume: bool) -> None:
        from ultralytics import YOLO

        from .ultralytics_env import guarded
        from .ultralytics_trainer import LLRD_EVENT, KitaeruDetectionTrainer, LlrdCallback

        last = self.run.path / LAST
        same_model = self.state.trained_model == plan["model"]
        try:
            resumable, ckpt_epoch = (checkpoint_is_resumable(last, trust=self.config.trust_checkpoint)
                                     if last.is_file() else (False, 0))
        except DataError as exc:
            warn(f"{exc}; starting this attempt afresh")
            resumable, ckpt_epoch = False, 0
        if resume and resumable and same_model:
            mode = f"resumed from {LAST} (epoch {ckpt_epoch} done)"
            yolo_source = str(last)
            args = self._resume_args(plan)
        else:
            mode = "fresh start"
            if resume:
                why = ("no checkpoint yet" if not last.is_file() else
                       "model changed; earlier weights kept aside" if not same_model else "checkpoint not resumable")
                mode += f" ({why})"
            self._prepare_fresh_start(plan)
            source = resolve_model(plan["model"], offline=self.config.offline)
            if source.note:
                warn(source.note)
            if source.kind == "weights":
                check_weights(source.load, trust=self.config.trust_checkpoint, what="--model checkpoint")
            yolo_source = source.load
            self.fields["model_source"] = source.as_dict()
            args = self._fresh_args(plan)
        attempt = Attempt(number=len(self.earlier_attempts) + len(self.state.attempts) + 1, mode=mode, plan=dict(plan))
        self.state.attempts.append(attempt)
        self.state.trained_model = plan["model"]
        info(f"attempt {attempt.number}: {mode}; batch {plan['batch']}, imgsz {plan['imgsz']}, model {plan['model']}")
        started = time.time()
        out_of_memory: str | None = None
        try:
            with guarded(self.config.offline):
                yolo = YOLO(yolo_source)
                self.evidence.register(yolo, self.extra_callbacks)
                if self.config.llrd:
                    self.llrd = LlrdCallback(self.config.llrd_decay_rate)
                    yolo.add_callback(LLRD_EVENT, self.llrd)
                yolo.train(trainer=KitaeruDetectionTrainer, **args)
        except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised
            attempt.seconds = round(time.time() - started, 3)
            if not is_out_of_memory(exc):
                attempt.outcome = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                raise
            out_of_memory = str(exc).splitlines()[0] if str(exc) else "out of memory"
            attempt.outcome = f"out of memory at epoch {self.state.last_epoch + 1}"
        finally:
            self._sync_batch(plan, attempt)
        if out_of_memory is not None:
            # Raised outside the except block, so the trainer (and its GPU tensors) held by the
            # original traceback are released before the ladder frees the cache and retries.
            yolo = None
            gc.collect()
            import torch

            raise torch.cuda.OutOfMemoryError(out_of_memory)
        attempt.seconds = round(time.time() - started, 3)
        attempt.outcome = "completed"

    def _sync_batch(self, plan: Plan, attempt: Attempt) -> None:
        if attempt.plan.get("batch") != plan.get("batch"):
            # Ultralytics halved the batch itself (first-epoch OOM): the ladder's plan is updated
            # in place so its next step starts from the batch that was really used.
            plan["batch"] = attempt.plan["batch"]
            for reduction in self.state.batch_reductions:
                if reduction not in self.oom_recoveries:
                    self.oom_recoveries.append(reduction)

    def _prepare_fresh_start(self, plan: Plan) -> None:
        csv = self.run.path / ULTRALYTICS_CSV
        if csv.exists():
            csv.unlink()  # Ultralytics appends; a fresh start must not continue the old rows
        weights = self.run.path / "weights"
        if self.state.trained_model and self.state.trained_model != plan["model"] and weights.is_dir():
            aside = weights / f"abandoned_{Path(self.state.trained_model).stem}"
            aside.mkdir(exist_ok=True)
            for name in ("last.pt", "best.pt"):
                if (weights / name).exists():
                    os.replace(weights / name, aside / name)
            self.state.last_epoch = 0

    def _common_args(self, plan: Plan) -> dict[str, Any]:
        # a GPU list (--device 0,1) goes to Ultralytics as written: its own DDP launcher trains on those GPUs
        device = ultralytics_device_arg(self.config.device, self.resource_plan["device"]["device"])
        return {
            "data": str(self.data_yaml),
            "batch": int(plan["batch"]),
            "imgsz": int(plan["imgsz"]),
            "workers": int(plan["workers"]),
            "cache": bool(plan["cache"]),
            "device": device,
            "save_dir": str(self.run.path),
            "plots": bool(self.ultralytics_args.get("plots", False)),
            "patience": int(self.resource_plan["values"]["patience"]),
        }

    def _fresh_args(self, plan: Plan) -> dict[str, Any]:
        args = {k: v for k, v in self.ultralytics_args.items() if k != "device"}
        args.update(self._common_args(plan))
        args.update({"epochs": int(self.resource_plan["values"]["epochs"]), "exist_ok": True, "seed": self.config.seed})
        return args

    def _resume_args(self, plan: Plan) -> dict[str, Any]:
        common = self._common_args(plan)
        args = {k: common[k] for k in RESUME_ARGS if k in common}
        if "save_period" in self.ultralytics_args:
            args["save_period"] = self.ultralytics_args["save_period"]
        args.update({"data": common["data"], "resume": True})
        return args

    def _on_oom_step(self, record: OomRecovery) -> None:
        entry = record.as_dict()
        entry["epoch"] = self.state.last_epoch + 1
        same_model = record.plan.get("model") == self.state.trained_model
        entry["resumes_from"] = LAST if same_model and (self.run.path / LAST).is_file() else None
        self.oom_recoveries.append(entry)
        self.current_plan = dict(record.plan)
        warn(f"out of memory at epoch {entry['epoch']}: {record.change}; retrying (step {record.attempt})")
        self.write("running")

    def _record_ultralytics_drops(self) -> None:
        """Images Ultralytics' own checks dropped (e.g. corrupt files) join the run's skipped list."""
        known = {item["path"] for item in self.run.skipped}
        for report in (self.state.dataset_check or {}).values():
            new = [item for item in report.get("items", []) if item["path"] not in known]
            self.run.record_skipped(new)
            known.update(item["path"] for item in new)

    # ---- export and TensorBoard ------------------------------------------------------------
    def _export(self) -> None:
        from .export import export_with_parity

        best = self.run.path / BEST
        weights = best if best.is_file() else self.run.path / LAST
        image = self._parity_image()
        self.export = export_with_parity(
            weights, fmt=str(self.config.export), imgsz=int(self.current_plan["imgsz"]), image=image,
            tolerance=self.config.export_tolerance, offline=self.config.offline,
        )
        self.export["path"] = os.path.relpath(self.export["path"], self.run.path)
        if not self.export["parity_ok"]:
            warn(
                f"ONNX export differs from PyTorch by {self.export['max_abs_diff']:.3g} "
                f"(> tolerance {self.config.export_tolerance:g})"
            )

    def _parity_image(self) -> str:
        """A validation image Ultralytics accepted (a corrupt one would only test the decoder)."""
        dropped = {item["path"] for item in ((self.state.dataset_check or {}).get("val") or {}).get("items", [])}
        for image in self.evidence.expected_images.get("val", []):
            if str(image) not in dropped:
                return str(image)
        image = (self.fields.get("dataset") or {}).get("parity_image")
        if not image:
            raise KitaeruError("--export: no usable validation image for the ONNX check")
        return str(image)

    def _start_tensorboard(self) -> None:
        if not self.config.tensorboard:
            return
        from .tensorboard_server import start_tensorboard

        self.tensorboard = start_tensorboard(
            self.run.tensorboard_dir, self.config.tensorboard_port, log_file=self.run.path / "tensorboard_server.log"
        )
        if self.tensorboard.reused:
            info(f"TensorBoard: {self.tensorboard.url} (already running there; serving {self.tensorboard.serving or 'its own logdir'})")
        elif self.tensorboard.url:
            info(f"TensorBoard: {self.tensorboard.url}")
        else:
            warn(f"TensorBoard server not started: {self.tensorboard.reason}")

    def stop_tensorboard(self) -> None:
        """Stop the server this run started (idempotent)."""
        if self.tensorboard is not None:
            self.tensorboard.stop(wait=False)  # never holds the run's end

    # ---- the result file -------------------------------------------------------------------
    def fields_now(self, **extra: Any) -> dict[str, Any]:
        """Everything known about the run now, as ``training_result.json`` fields."""
        state = self.state
        metrics = state.final_metrics or state.epoch_metrics
        attempts = self.earlier_attempts + [a.as_dict() for a in state.attempts]
        plan = dict(self.resource_plan)
        plan["final"] = dict(self.current_plan)
        tensorboard = self.tensorboard.as_dict() if self.tensorboard is not None else {"url": None, "not_started_because": "--no-tensorboard"}
        fields: dict[str, Any] = {
            "best_model_path": BEST if (self.run.path / BEST).is_file() else None,
            "last_model_path": LAST if (self.run.path / LAST).is_file() else None,
            "metrics": {k: metrics.get(k) for k in FINAL_METRICS},
            "training_time_minutes": round(self.earlier_minutes + (time.time() - self.started) / 60, 4),
            "epochs_completed": state.last_epoch if state.attempts else int(self.previous.get("epochs_completed", 0) or 0),
            "epochs_planned": int(self.resource_plan["values"]["epochs"]),
            "tensorboard_url": tensorboard.get("url"),
            "tensorboard": {**tensorboard, "logdir": "tensorboard" if self.config.tensorboard else None},
            "config": self.config.model_dump(mode="json"),
            "resource_plan": plan,
            "oom_recoveries": self.oom_recoveries,
            "attempts": attempts,
            "llrd": {"enabled": self.config.llrd, "decay_rate": self.config.llrd_decay_rate if self.config.llrd else None,
                     "groups": self.llrd.groups if self.llrd is not None else None},
            "export": self.export,
            "run_dir": str(self.run.path),
            # refreshed with every heartbeat: --resume once last.pt exists, before that a fresh start
            "resume_command": continue_command(self.run.path),
            **self.fields,
            **extra,
        }
        if state.dataset_check is not None:
            fields["dataset"] = {**self.fields.get("dataset", {}), "ultralytics_check": state.dataset_check}
        return fields

    def write(self, status: str, **extra: Any) -> dict[str, Any]:
        """Write ``training_result.json`` with everything known now (``running``: as the lifecycle's
        heartbeat); returns what was written."""
        fields = self.fields_now(**extra)
        if status == "running":
            # Inside the lifecycle: the fields every heartbeat (one per epoch, from results.csv's
            # logging) and the final status carry. The epoch count is left to the run folder,
            # which counts results.csv's rows, so it stays current between these refreshes.
            fields.pop("epochs_completed")
            self.run.heartbeat(**fields)
        else:
            self.run.write_result(status, **fields)
        return {"status": status, **fields}
