"""The run folder and the evidence every training run leaves in it.

::

    <run>/config.yaml            the resolved config
    <run>/results.csv            one row per epoch: epoch, seconds, losses, metrics, lr
    <run>/training_result.json   status, weight paths, final metrics, wall time, epochs completed,
                                 device/tier/resource decisions, OOM recoveries, skipped inputs,
                                 library versions
    <run>/weights/               checkpoints
    <run>/tensorboard/           TensorBoard scalars (the same numbers as results.csv)

All files are written atomically; ``results.csv`` is rewritten whole on each epoch so a resumed
run continues the same file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Mapping

from .storage import atomic_write_json, atomic_write_text, ensure_writable_dir
from .versions import library_versions

RESULTS_CSV = "results.csv"
RESULT_JSON = "training_result.json"
CONFIG_YAML = "config.yaml"


def timestamped_dir(root: str | os.PathLike, prefix: str) -> Path:
    """``root/<prefix>_YYYYMMDD_HHMMSS`` (a suffix is added if that name is taken)."""
    root = Path(root)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    candidate = root / f"{prefix}_{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = root / f"{prefix}_{stamp}_{n}"
    return candidate


class RunFolder:
    """Writes (and, for resume, reads back) the evidence of one run."""

    def __init__(self, path: str | os.PathLike, *, tensorboard: bool = True):
        self.path = ensure_writable_dir(path)
        self.tensorboard_enabled = tensorboard
        self._writer = None
        self._rows: list[dict[str, Any]] = self.read_results()
        self._skipped: list[dict[str, str]] = []
        self._started = time.time()

    # ---- locations -------------------------------------------------------------------------
    @property
    def weights_dir(self) -> Path:
        d = self.path / "weights"
        d.mkdir(exist_ok=True)
        return d

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def results_csv(self) -> Path:
        return self.path / RESULTS_CSV

    @property
    def result_json(self) -> Path:
        return self.path / RESULT_JSON

    # ---- config ----------------------------------------------------------------------------
    def save_config(self, config) -> Path:
        from .config import config_to_yaml

        return atomic_write_text(self.path / CONFIG_YAML, config_to_yaml(config, "resolved config of this run"))

    # ---- per-epoch rows --------------------------------------------------------------------
    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def read_results(self) -> list[dict[str, Any]]:
        if not self.results_csv.exists():
            return []
        with open(self.results_csv, newline="", encoding="utf-8") as fh:
            return [{k: _parse_number(v) for k, v in row.items()} for row in csv.DictReader(fh)]

    def log_epoch(self, row: Mapping[str, Any], *, step: int | None = None) -> None:
        """Append one epoch's numbers to ``results.csv`` (replacing a row of the same epoch, as a
        resumed run re-logs it) and to TensorBoard."""
        row = dict(row)
        epoch = row.get("epoch")
        self._rows = [r for r in self._rows if epoch is None or r.get("epoch") != epoch] + [row]
        self._rows.sort(key=lambda r: (r.get("epoch") is None, r.get("epoch") or 0))
        atomic_write_text(self.results_csv, _rows_to_csv(self._rows))
        scalars = {k: v for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}
        self.log_scalars(scalars, step=step if step is not None else int(epoch or len(self._rows)))

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        writer = self._tensorboard()
        if writer is None:
            return
        for key, value in scalars.items():
            writer.add_scalar(key, float(value), step)
        writer.flush()

    def _tensorboard(self):
        if not self.tensorboard_enabled:
            return None
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.tensorboard_dir))
        return self._writer

    # ---- skipped inputs --------------------------------------------------------------------
    def record_skipped(self, items: Iterable[Mapping[str, str]]) -> None:
        """Remember inputs that were skipped (``{"path", "reason"}``) for the result file."""
        self._skipped.extend(dict(i) for i in items)

    @property
    def skipped(self) -> list[dict[str, str]]:
        return list(self._skipped)

    # ---- final result ----------------------------------------------------------------------
    def write_result(self, status: str, **fields: Any) -> Path:
        """Write ``training_result.json``: the recipe's fields plus the common evidence.

        Common keys: ``status``, ``wall_time_seconds``, ``epochs_completed`` (from results.csv
        unless given), ``skipped_inputs``, ``library_versions``, ``finished_at``.
        """
        result: dict[str, Any] = {"status": status}
        result.update(fields)
        result.setdefault("epochs_completed", sum(1 for r in self._rows if (r.get("epoch") or 0) > 0))
        result.setdefault("wall_time_seconds", round(time.time() - self._started, 3))
        result.setdefault("skipped_inputs", {"count": len(self._skipped), "items": self._skipped})
        result["library_versions"] = library_versions()
        result["finished_at"] = datetime.now().isoformat(timespec="seconds")
        return atomic_write_json(self.result_json, result)

    def read_result(self) -> dict[str, Any] | None:
        if not self.result_json.exists():
            return None
        return json.loads(self.result_json.read_text(encoding="utf-8"))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _rows_to_csv(rows: list[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    if "epoch" in columns:
        columns.insert(0, columns.pop(columns.index("epoch")))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _format_number(row.get(k)) for k in columns})
    return buf.getvalue()


def _format_number(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


def _parse_number(text: str | None) -> Any:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
