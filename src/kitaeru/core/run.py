"""The run folder and the evidence every training run leaves in it.

::

    <run>/config.yaml            the resolved config
    <run>/results.csv            one row per epoch: epoch, seconds, losses, metrics, lr
    <run>/training_result.json   status, weight paths, final metrics, wall time, epochs completed,
                                 device/tier/resource decisions, OOM recoveries, skipped inputs,
                                 library versions
    <run>/weights/               checkpoints
    <run>/tensorboard/           TensorBoard scalars (the same numbers as results.csv)

A run folder is opened only after the inputs' checks that need no model have passed (the mode's
``check`` and the recipe's own preparation), so a refused run leaves no folder; its name stays
inside the output folder (:mod:`kitaeru.core.run_dirs`). All files are written atomically;
``results.csv`` is rewritten whole on each epoch so a resumed run continues the same file. While a run trains, ``results.csv`` and the ``running`` heartbeat are
written on a background thread (:class:`~kitaeru.core.storage.BackgroundWriter`) so a slow disk never
stalls training; anything that reads them back, and every final status, waits for those writes first.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from .errors import DataError, RunInterrupted
from .storage import BackgroundWriter, atomic_write_json, atomic_write_text, ensure_writable_dir, json_text
from .versions import library_versions
# Run folder naming lives beside this module; imported here so callers keep one place to import from.
from .run_dirs import RESULT_JSON, holds_run, next_run_dir, refuse_used_run_dir, run_dir_under, timestamped_dir  # noqa: F401
from .run_status import read_run_status  # noqa: F401 - kitaeru.core.run is where callers find it

RESULTS_CSV = "results.csv"
CONFIG_YAML = "config.yaml"


class RunFolder:
    """Writes (and, for resume, reads back) the evidence of one run."""

    def __init__(self, path: str | os.PathLike, *, tensorboard: bool = True):
        self.path = ensure_writable_dir(path)
        self._evidence = BackgroundWriter()  # results.csv and heartbeats while training runs
        self.tensorboard_enabled = tensorboard
        self._writer = None
        self._rows: list[dict[str, Any]] = self.read_results()
        self._skipped: list[dict[str, str]] = []
        self._started = time.time()
        self._live: dict[str, Any] | None = None  # fields of a running lifecycle, refreshed as heartbeat
        self._status: str | None = None
        self._epochs_logged = 0  # log_epoch calls: tells whether a results.png drawn early is still current
        self._png: tuple[threading.Thread, int, dict[str, Any]] | None = None
        # Experiment trackers (kitaeru.core.tracking.attach_reporter): fed every number logged here.
        self.reporter: Any = None

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
        self.flush()
        if not self.results_csv.exists():
            return []
        try:
            with open(self.results_csv, newline="", encoding="utf-8") as fh:
                return [{k: _parse_number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
        except (UnicodeDecodeError, csv.Error) as exc:  # a damaged file: one line, not a traceback
            raise DataError(f"{self.results_csv}: not a readable results.csv ({str(exc).splitlines()[0][:120]}); "
                            "move it away to continue this run without its earlier rows") from exc

    def log_epoch(self, row: Mapping[str, Any], *, step: int | None = None) -> None:
        """Append one epoch's numbers to ``results.csv`` (replacing a row of the same epoch, as a
        resumed run re-logs it) and to TensorBoard."""
        row = dict(row)
        epoch = row.get("epoch")
        self._rows = [r for r in self._rows if epoch is None or r.get("epoch") != epoch] + [row]
        self._rows.sort(key=lambda r: (r.get("epoch") is None, r.get("epoch") or 0))
        self._evidence.submit(self.results_csv, _rows_to_csv(self._rows))
        self._epochs_logged += 1
        scalars = {k: v for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}
        if self.reporter is not None:  # trackers count a results.csv row at step = its epoch (0 too)
            at_epoch = int(epoch) if epoch is not None else len(self._rows)
            self.reporter.log_metrics(scalars, step=step if step is not None else at_epoch)
        self._write_scalars(scalars, step=step if step is not None else int(epoch or len(self._rows)))
        self.heartbeat()
        _progress_line(row, (self._live or {}).get("epochs_planned"))

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:
        """Numbers that are not a results.csv row (per-step losses): TensorBoard and the trackers."""
        if self.reporter is not None:
            self.reporter.log_metrics(scalars, step=step)
        self._write_scalars(scalars, step)

    def _write_scalars(self, scalars: Mapping[str, float], step: int) -> None:
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
        """Write ``training_result.json`` now (after any heartbeat still being written): the
        recipe's fields plus the common evidence.

        Common keys: ``status``, ``pid``, ``host``, ``started_at``, ``heartbeat_at``,
        ``wall_time_seconds``, ``epochs_completed`` (from results.csv unless given),
        ``skipped_inputs``, ``library_versions``, ``finished_at`` (once not running).
        """
        self.flush()
        self._status = status
        return atomic_write_json(self.result_json, self._result_record(status, fields))

    def _result_record(self, status: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {"status": status}
        if self._live is not None:
            result.update({k: v for k, v in self._live.items() if k not in fields})
        result.update(fields)
        result.setdefault("pid", os.getpid())
        result.setdefault("host", socket.gethostname())
        result.setdefault("started_at", datetime.fromtimestamp(self._started).isoformat(timespec="seconds"))
        result["heartbeat_at"] = datetime.now().isoformat(timespec="seconds")
        result.setdefault("epochs_completed", sum(1 for r in self._rows if (r.get("epoch") or 0) > 0))
        result.setdefault("wall_time_seconds", round(time.time() - self._started, 3))
        result.setdefault("skipped_inputs", {"count": len(self._skipped), "items": self._skipped})
        if self.reporter is not None:
            result["tracking"] = self.reporter.links()
        result["library_versions"] = library_versions()
        if status != "running":
            result["finished_at"] = datetime.now().isoformat(timespec="seconds")
        return result

    def flush(self) -> None:
        """Wait until the evidence written in the background is on disk."""
        self._evidence.flush()

    def heartbeat(self, **fields: Any) -> None:
        """While a lifecycle runs: refresh ``training_result.json`` (status running, new heartbeat),
        written in the background (:meth:`flush` waits for it)."""
        if self._live is None or self._status not in (None, "running"):
            return
        self._live.update(fields)
        self._status = "running"
        self._evidence.submit(self.result_json, json_text(self._result_record("running", {})))

    @contextlib.contextmanager
    def lifecycle(self, *, resume_command: str, **fields: Any) -> Iterator["RunFolder"]:
        """The one run lifecycle: ``running`` from the first second (pid, host, heartbeat), then
        ``completed`` (unless the body wrote its own final status), ``failed`` with the one-line
        error, or ``interrupted`` on Ctrl-C / SIGTERM — which ends in :class:`RunInterrupted`
        (exit 130) whose message is the command that resumes the run. Writers are always closed, and
        ``results.png`` is complete when it exits (drawn then, or waited for: :meth:`start_results_png`).
        """
        self._live = {"resume_command": resume_command, **fields}
        self._status = None
        self.write_result("running")
        if self.reporter is not None:
            self.reporter.set_tags(self._live)
        with _sigterm_as_interrupt():
            try:
                yield self
            except (KeyboardInterrupt, RunInterrupted):
                self.write_result("interrupted")
                raise RunInterrupted(f"interrupted; resume with: {resume_command}") from None
            except BaseException as exc:
                text = str(exc).splitlines()[0] if str(exc) else ""
                self.write_result("failed", error=f"{type(exc).__name__}: {text}" if not _is_user_error(exc) else text)
                raise
            else:
                if self._status in (None, "running"):
                    self.write_result("completed")
            finally:
                self._live = None
                self.close()
                self.finish_results_png()
                if self.reporter is not None:  # final status and evidence to the trackers, last
                    self.reporter.finish_run(self, self._status)

    def write_results_png(self) -> Path | None:
        """``results.png`` (the curves of results.csv) for people who don't open a UI; a plot never
        fails a run: any problem is a warning."""
        try:
            self.flush()  # the picture is drawn from results.csv on disk
            from .plots import write_results_png

            return write_results_png(self.path)
        except Exception as exc:  # noqa: BLE001 - evidence of a finished run must not be lost to a plot
            from .console import warn

            warn(f"{self.path / 'results.png'}: not drawn ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
            return None

    def start_results_png(self) -> None:
        """Start drawing ``results.png`` in a background thread now, for a recipe whose last epoch is
        logged but whose run goes on a while (a final validation, saving): the drawing then overlaps
        that work instead of adding to the run's end. :meth:`finish_results_png` (the lifecycle's
        end) waits for it, and draws again if an epoch was logged after the start."""
        if self._png is not None:
            return
        self.flush()  # the picture is drawn from results.csv on disk
        outcome: dict[str, Any] = {}

        def draw() -> None:
            try:
                from .plots import write_results_png

                outcome["path"] = write_results_png(self.path)
            except Exception as exc:  # noqa: BLE001 - drawn again (and reported) by finish_results_png
                outcome["error"] = exc

        # Not a daemon: should a second Ctrl-C cut the lifecycle's wait short, the interpreter still
        # waits for the thread at exit, so the PNG is still written.
        thread = threading.Thread(target=draw, name="results-png")
        thread.start()
        self._png = (thread, self._epochs_logged, outcome)

    def finish_results_png(self) -> Path | None:
        """``results.png`` complete on return: the background drawing joined when it is current,
        otherwise (none started, an epoch logged since, an error) drawn here."""
        pending, self._png = self._png, None
        if pending is not None:
            thread, logged, outcome = pending
            thread.join()
            if logged == self._epochs_logged and "error" not in outcome:
                return outcome.get("path")
        return self.write_results_png()

    def read_result(self) -> dict[str, Any] | None:
        self.flush()
        if not self.result_json.exists():
            return None
        from .storage import read_json

        result = read_json(self.result_json)  # a damaged file is a one-line DataError naming it
        if not isinstance(result, dict):
            raise DataError(f"{self.result_json}: not a run record (a JSON object was expected)")
        return result

    def close(self) -> None:
        self.flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_user_error(exc: BaseException) -> bool:
    from .errors import KitaeruError

    return isinstance(exc, KitaeruError)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler or ``kill``) stops a run the way Ctrl-C does, so it ends ``interrupted``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress_line(row: Mapping[str, Any], planned: Any) -> None:
    """``epoch 3/10: loss 0.1234, lr 0.001`` for a watched log (see console.progress_lines)."""
    from .console import progress_line, progress_lines

    if not progress_lines():
        return
    epoch = row.get("epoch")
    head = f"epoch {epoch}/{planned}" if epoch is not None and planned else f"epoch {epoch}"
    numbers = [f"{k} {v:.4g}" for k, v in row.items()
               if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    progress_line(f"{head}: {', '.join(numbers[:8])}" if numbers else head)


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
