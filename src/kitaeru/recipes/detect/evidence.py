"""Ultralytics callbacks that write kitaeru's run evidence and keep count of what really happened.

Per epoch: one row in ``results.csv`` (epoch, seconds, box/cls/dfl loss, precision, recall,
mAP50, mAP50-95, validation losses, lr) and the same numbers as TensorBoard scalars, through
:class:`~kitaeru.core.run.RunFolder`. Ultralytics' own CSV is moved to ``ultralytics_results.csv``
so the two never write the same file; when a run resumes, that file is cut back to the epochs the
checkpoint holds, so an epoch that was logged but not saved is never listed twice, and an epoch the
checkpoint holds but ``results.csv`` missed (an interrupt between the two) is restored from it. Each training attempt (a fresh start, a resume after an
out-of-memory step) is recorded with the epoch it started at, which is what proves a recovery
resumed rather than restarted. Ultralytics' final validation of ``best.pt`` gives the final metrics.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from kitaeru.core.run import RunFolder

ULTRALYTICS_CSV = "ultralytics_results.csv"
ANALYTICS_MODULES = ("ultralytics.utils.events", "ultralytics.utils.callbacks.platform")
FINAL_METRICS = ("mAP50", "mAP50-95", "precision", "recall")


@dataclass
class Attempt:
    """One call into Ultralytics' trainer."""

    number: int
    mode: str
    plan: dict[str, Any]
    start_epoch: int | None = None  # 1-based first epoch this attempt trained
    epochs_trained: int = 0
    outcome: str = "running"
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingState:
    """What the callbacks learn during a run (across attempts)."""

    attempts: list[Attempt] = field(default_factory=list)
    last_epoch: int = 0  # last completed epoch (1-based) of the model now being trained
    trained_model: str | None = None
    final_metrics: dict[str, float] | None = None
    epoch_metrics: dict[str, float] = field(default_factory=dict)
    dataset_check: dict[str, Any] | None = None
    batch_reductions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def current(self) -> Attempt:
        return self.attempts[-1]


def metric_name(key: str) -> str:
    """``metrics/mAP50(B)`` → ``mAP50``; ``val/box_loss`` → ``val_box_loss``; ``train/box_loss`` → ``box_loss``."""
    if key.startswith("metrics/"):
        name = key[len("metrics/"):]
        return name[:-3] if name.endswith("(B)") else name
    if key.startswith("val/"):
        return "val_" + key[len("val/"):]
    if key.startswith("train/"):
        return key[len("train/"):]
    return key.replace("/", "_")


def named_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    out = {}
    for key, value in (metrics or {}).items():
        try:
            out[metric_name(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


class EvidenceCallbacks:
    """The callbacks of one run; :meth:`register` adds them (and any extra ones) to a YOLO model."""

    def __init__(
        self,
        run: RunFolder,
        state: TrainingState,
        *,
        strip_analytics: bool = True,
        expected_images: Mapping[str, Sequence[Path]] | None = None,
    ):
        self.run = run
        self.state = state
        self.strip_analytics = strip_analytics
        self.expected_images = expected_images or {}
        self._epoch_open = False
        self._epoch_started = time.time()

    def register(self, yolo, extra: Mapping[str, Iterable[Callable]] | None = None) -> None:
        for event in ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_epoch_start",
                      "on_train_epoch_end", "on_fit_epoch_end", "on_train_end"):
            yolo.add_callback(event, getattr(self, event))
        for event, callbacks in (extra or {}).items():
            for callback in callbacks:
                yolo.add_callback(event, callback)

    # ---- Ultralytics events ----------------------------------------------------------------
    def on_pretrain_routine_start(self, trainer) -> None:
        if not self.strip_analytics:
            return
        for callbacks in trainer.callbacks.values():
            # In place: Ultralytics is iterating this event's list right now; the analytics
            # callbacks come after ours, so removing them is safe and they never run.
            callbacks[:] = [c for c in callbacks if getattr(c, "__module__", "") not in ANALYTICS_MODULES]

    def on_pretrain_routine_end(self, trainer) -> None:
        trainer.csv = Path(trainer.save_dir) / ULTRALYTICS_CSV
        self.state.current.start_epoch = int(trainer.start_epoch) + 1
        trim_epochs(trainer.csv, keep_through=int(trainer.start_epoch))
        restore_missing_epochs(self.run, trainer.csv, through=int(trainer.start_epoch))
        if self.state.dataset_check is None:
            self.state.dataset_check = {
                split: dataset_report(loader, self.expected_images.get(split, ()))
                for split, loader in (("train", trainer.train_loader), ("val", trainer.test_loader))
            }

    def on_train_epoch_start(self, trainer) -> None:
        self._epoch_started = time.time()

    def on_train_epoch_end(self, trainer) -> None:
        self._epoch_open = True

    def on_fit_epoch_end(self, trainer) -> None:
        if not self._epoch_open:
            # Ultralytics' final validation of best.pt reports through this event too.
            self.state.final_metrics = named_metrics(trainer.metrics)
            return
        self._epoch_open = False
        row: dict[str, Any] = {"epoch": int(trainer.epoch) + 1, "seconds": round(time.time() - self._epoch_started, 3)}
        row.update(named_metrics(trainer.label_loss_items(trainer.tloss, prefix="train")))
        row.update(named_metrics(trainer.metrics))
        row["lr"] = float(trainer.optimizer.param_groups[0]["lr"])
        self.run.log_epoch(row)
        if trainer.stop:
            # The last epoch (Ultralytics has set stop): results.png is drawn while Ultralytics
            # validates best.pt and tears down, not after.
            self.run.start_results_png()
        self.state.last_epoch = row["epoch"]
        self.state.epoch_metrics = {k: row[k] for k in FINAL_METRICS if k in row}
        attempt = self.state.current
        attempt.epochs_trained += 1
        planned = int(attempt.plan.get("batch", 0) or 0)
        if planned and int(trainer.batch_size) < planned:
            # Ultralytics halves the batch itself on an OOM in the first epoch; keep the plan honest.
            self.state.batch_reductions.append(
                {"step": "ultralytics_first_epoch_halving", "change": f"batch {planned} -> {int(trainer.batch_size)}",
                 "epoch": row["epoch"]}
            )
            attempt.plan["batch"] = int(trainer.batch_size)

    def on_train_end(self, trainer) -> None:
        if self.state.final_metrics is None:
            self.state.final_metrics = named_metrics(trainer.metrics)


def trim_epochs(csv_path: Path, keep_through: int) -> None:
    """Keep the rows of Ultralytics' CSV up to epoch ``keep_through`` (1-based), one row per epoch."""
    import csv
    import io

    from kitaeru.core.storage import atomic_write_text

    if not csv_path.is_file():
        return
    text = csv_path.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return
    header, kept = rows[0], {}
    for row in rows[1:]:
        try:
            epoch = int(float(row[0]))
        except (ValueError, IndexError):
            continue
        if epoch <= keep_through:
            kept[epoch] = row  # a repeated epoch: the later row wins
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(kept[e] for e in sorted(kept))
    if buf.getvalue() != text:
        atomic_write_text(csv_path, buf.getvalue())


def restore_missing_epochs(run: RunFolder, csv_path: Path, through: int) -> list[int]:
    """Log the rows ``results.csv`` lacks for epochs 1..``through`` from Ultralytics' own CSV.

    Ultralytics saves ``last.pt`` before our end-of-epoch callback logs the row, and the row is
    written in the background: an interrupt in between leaves an epoch in the checkpoint (so the
    resume starts after it) but not in ``results.csv``. Ultralytics' CSV was written before the
    checkpoint, so it has that epoch's numbers. Returns the epochs restored."""
    if through < 1 or not csv_path.is_file():
        return []
    have = {int(r["epoch"]) for r in run.rows if isinstance(r.get("epoch"), (int, float))}
    missing = [e for e in range(1, through + 1) if e not in have]
    if not missing:
        return []
    restored = []
    previous_time = None
    for row in ultralytics_rows(csv_path):
        epoch, elapsed = int(row.pop("epoch")), row.pop("time", None)
        # "time" counts from the start of each training attempt: a drop means a resume began there
        if elapsed is None:
            seconds = None
        else:
            since = previous_time if previous_time is not None and elapsed >= previous_time else 0.0
            seconds = round(elapsed - since, 3)
        previous_time = elapsed
        if epoch not in missing:
            continue
        entry: dict[str, Any] = {"epoch": epoch, "seconds": seconds}
        entry.update({metric_name(k): v for k, v in row.items() if not k.startswith("lr/")})
        if "lr/pg0" in row:
            entry["lr"] = row["lr/pg0"]  # what the live rows record: the first parameter group's lr
        run.log_epoch(entry)
        restored.append(epoch)
    return restored


def ultralytics_rows(csv_path: Path) -> list[dict[str, float]]:
    """Ultralytics' CSV as numbers per row, in epoch order (unreadable cells left out)."""
    import csv

    rows = []
    with open(csv_path, newline="", encoding="utf-8", errors="replace") as fh:
        for raw in csv.DictReader(fh):
            row = {}
            for key, value in raw.items():
                try:
                    row[(key or "").strip()] = float(value)
                except (TypeError, ValueError):
                    continue
            if "epoch" in row:
                rows.append(row)
    return sorted(rows, key=lambda r: r["epoch"])


def dataset_report(loader, expected: Sequence[Path]) -> dict[str, Any]:
    """What Ultralytics' own image/label checks kept of a split, and which images it dropped (with why)."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "im_files"):
        return {"available": False}
    used = {os.path.abspath(p) for p in dataset.im_files}
    total = len(getattr(dataset, "label_files", None) or dataset.im_files)
    dropped = [str(p) for p in expected if os.path.abspath(p) not in used]
    reasons = _cache_messages(dataset)
    items = []
    for path in dropped:
        reason = next((m for m in reasons if path in m), "dropped by Ultralytics' checks")
        items.append({"path": path, "reason": _short(reason, path)})
    return {"available": True, "images": total, "used": len(used), "dropped": len(items), "items": items}


def _cache_messages(dataset) -> list[str]:
    """Ultralytics keeps its per-image warnings in the label cache file (when it could write one)."""
    label_files = getattr(dataset, "label_files", None)
    if not label_files:
        return []
    cache = Path(label_files[0]).parent.with_suffix(".cache")
    if not cache.is_file():
        return []
    try:
        from ultralytics.data.utils import load_dataset_cache_file

        return [str(m) for m in load_dataset_cache_file(cache).get("msgs", [])]
    except Exception:  # noqa: BLE001 - a stale or foreign cache only loses the reasons, not the counts
        return []


def _short(message: str, path: str) -> str:
    text = message.split(path, 1)[-1].lstrip(": ").strip()
    if "No module named" in text:
        # Ultralytics' Image.open tries a HEIF plugin on any file PIL cannot identify
        return "not an image (cannot identify the file format)"
    return text[:300] or message[:300]
