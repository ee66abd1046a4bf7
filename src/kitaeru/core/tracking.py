"""Experiment tracking: every training run reported where a team already looks.

``--report-to tensorboard`` (default) | ``mlflow`` | ``wandb`` | ``csv`` | ``none``, several comma-separated.
The settings are one section, :class:`TrackingSettings`, that every training config declares as
``tracking`` (flags promoted: ``--report-to``, ``--experiment``, ``--report-to-optional``,
``--no-log-weights``). A :class:`Reporter` is attached to the run folder before anything heavy loads
(:func:`attach_reporter`); from then on the run folder itself feeds it, whichever engine trains:

* each ``results.csv`` row goes out as metrics at step = epoch, under the column names (per-step
  numbers a recipe logs with ``RunFolder.log_scalars`` go out at their own step);
* the resolved config (flattened) as params, and tags: recipe, mode, device, tier, kitaeru version;
* at the end the final status (completed / interrupted / failed), the evidence files and the final
  weights as artifacts;
* ``training_result.json`` carries ``"tracking": [{backend, run_id, url, experiment, error}]``
  (read it with :func:`tracking_links`), and ``<run>/tracking.json`` keeps the tracker run ids so a
  resumed run continues the same tracker run.

A tracker that cannot be reached at start is a one-line :class:`ConfigError` (a warning with
``--report-to-optional``); one that fails later never fails training: the error is recorded.
The clients are the libraries' own, through Lightning's loggers (:mod:`kitaeru.core.tracking_backends`).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from pydantic import field_validator

from .config import RecipeConfig, setting
from .errors import ConfigError
from .tracking_backends import Backend, describe, escape, open_backend

BACKENDS = ("tensorboard", "mlflow", "wandb", "csv", "none")
TRACKERS = ("mlflow", "wandb", "csv")  # the ones a Reporter drives; TensorBoard is the run folder's own
TRACKING_JSON = "tracking.json"
LINK_KEYS = ("backend", "run_id", "url", "experiment", "error")
# Evidence files every tracker receives (when present), at the artifact root.
EVIDENCE_FILES = ("config.yaml", "results.csv", "training_result.json", "results.png")
# Result keys under which recipes name their final weights (a file or a folder, relative to the run).
WEIGHT_KEYS = ("best_model_path", "last_model_path", "best_weights", "final_dir")
WEIGHT_SUFFIXES = (".pt", ".pth", ".ckpt", ".safetensors")


class TrackingSettings(RecipeConfig):
    """Where a training run reports its params, metrics, status and artifacts (shared by every training mode)."""

    report_to: str = setting(
        "tensorboard", "Where to report the run: tensorboard, mlflow, wandb, csv or none; several comma-separated "
        "(tensorboard,mlflow). MLflow reads MLFLOW_TRACKING_URI, W&B reads WANDB_PROJECT / WANDB_MODE.",
        promote=True, metavar="LIST")
    experiment: Optional[str] = setting(
        None, "Experiment (MLflow) or project (W&B) name (default: $MLFLOW_EXPERIMENT_NAME / $WANDB_PROJECT, "
        "else kitaeru-<job>).", promote=True, metavar="NAME")
    report_to_optional: bool = setting(
        False, "A tracker that cannot be reached at start is a warning and the run goes on (default: an error).",
        promote=True)
    log_weights: bool = setting(
        True, "Upload the final weights/adapter to the trackers (--no-log-weights: evidence files only).", promote=True)

    @field_validator("report_to", mode="before")
    @classmethod
    def _known_backends(cls, value: Any) -> str:
        items = value if isinstance(value, (list, tuple)) else str(value if value is not None else "").split(",")
        names = [str(item).strip().lower() for item in items if str(item).strip()]
        unknown = [n for n in names if n not in BACKENDS]
        if unknown or not names:
            raise ValueError(f"choose from {', '.join(BACKENDS)} (comma-separated), got {value!r}")
        if "none" in names and len(names) > 1:
            raise ValueError("'none' cannot be combined with other trackers")
        return ",".join(dict.fromkeys(names))

    @property
    def backends(self) -> list[str]:
        return [n for n in self.report_to.split(",") if n != "none"]

    @property
    def tensorboard(self) -> bool:
        """Whether TensorBoard events are written (Lightning's logger / the run folder's writer)."""
        return "tensorboard" in self.backends

    @property
    def trackers(self) -> list[str]:
        return [n for n in self.backends if n in TRACKERS]


def tracking_section(*, exclude: bool = False) -> Any:
    """The ``tracking`` field of a training config: declared once here, flags shown by every training mode.
    ``exclude``: not part of the dumped config (a recipe that stores its config inside checkpoints)."""
    return setting(default_factory=TrackingSettings, description="Experiment tracking (--report-to ...).",
                   exclude=exclude)


def tracking_links(result: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The tracker runs a ``training_result.json`` points at: ``[{backend, run_id, url, experiment, error}]``
    (empty when it reported to none, or was written before tracking existed)."""
    entries = (result or {}).get("tracking") if isinstance(result, Mapping) else None
    if not isinstance(entries, list):
        return []
    return [{key: entry.get(key) for key in LINK_KEYS} for entry in entries
            if isinstance(entry, Mapping) and entry.get("backend")]


def flatten_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr0": 0.01}}`` -> ``{"train.lr0": 0.01}``; lists become their JSON text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
        elif isinstance(value, (list, tuple, Mapping)):
            out[name] = json.dumps(value, default=str)
        else:
            out[name] = value
    return out


class Reporter:
    """The trackers of one run: fed by its :class:`~kitaeru.core.run.RunFolder`, never failing it."""

    def __init__(self, settings: TrackingSettings, run_dir: Path, backends: list[Any]):
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.backends = backends
        self.finished = False

    # ---- fed by the run folder ---------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        numbers = {k: float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v}  # NaN dropped
        if numbers:
            self._each("log metrics", lambda b: b.log_metrics(numbers, int(step)))

    def set_tags(self, record: Mapping[str, Any]) -> None:
        """Tags from the run's result fields as soon as they are known (device and tier come from planning)."""
        tags = run_tags(record)
        if tags:
            self._each("set tags", lambda b: b.set_tags(tags))

    def finish(self, status: str | None, record: Mapping[str, Any]) -> None:
        """Tags, artifacts and the final status; after this the run folder reports nothing more."""
        if self.finished:
            return
        self.finished = True
        self.set_tags(record)
        files = [self.run_dir / name for name in EVIDENCE_FILES if (self.run_dir / name).is_file()]
        weights = weight_paths(self.run_dir, record) if self.settings.log_weights else []
        self._each("upload artifacts", lambda b: b.log_artifacts(files, weights))
        self._each("set the final status", lambda b: b.close(status or "failed"))

    def finish_run(self, run, status: str | None) -> None:
        """:meth:`finish` with the run's final ``training_result.json``, and that file updated when a
        tracker failed on the way (the evidence says what the tracker did not get)."""
        if self.finished:
            return
        record = run.read_result() or {}
        self.finish(status, record)
        if record and record.get("tracking") != self.links():
            from .storage import atomic_write_json

            atomic_write_json(run.result_json, {**record, "tracking": self.links()})

    def links(self) -> list[dict[str, Any]]:
        return [b.link() for b in self.backends if b.name != "csv"]

    def _each(self, what: str, call) -> None:
        for backend in self.backends:
            if backend.error is not None:
                continue  # a tracker that failed once is left alone: training goes on without it
            try:
                call(backend)
            except Exception as exc:  # noqa: BLE001 - a tracker must never fail the training
                backend.fail(f"{what}: {describe(exc)}")


def run_tags(record: Mapping[str, Any]) -> dict[str, str]:
    from kitaeru import __version__

    tags = {"kitaeru_version": __version__}
    for key in ("recipe", "mode"):
        if record.get(key):
            tags[key] = str(record[key])
    plan = record.get("resource_plan") if isinstance(record.get("resource_plan"), Mapping) else {}
    device = record.get("device") or plan.get("device")  # detect keeps both inside its resource plan
    tier = record.get("tier") or plan.get("tier")
    if isinstance(device, Mapping):  # DeviceInfo.as_dict(): the device string and its tier
        tier = tier or device.get("tier")
        device = device.get("device") or device.get("type")
    if device:
        tags["device"] = str(device)
    if tier:
        tags["tier"] = str(tier.get("name") if isinstance(tier, Mapping) else tier)
    return tags


def weight_paths(run_dir: Path, record: Mapping[str, Any]) -> list[Path]:
    """The final weights a result names (files or folders inside the run folder), without duplicates."""
    found: list[Path] = []
    for key in WEIGHT_KEYS:
        values = record.get(key)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if not isinstance(value, str) or not value:
                continue
            path = Path(value) if Path(value).is_absolute() else run_dir / value
            if path.exists() and path.resolve() not in {p.resolve() for p in found}:
                found.append(path)
    files = record.get("files")  # a recipe's table of written files: its weight files among them
    for value in files.values() if isinstance(files, Mapping) else []:
        path = Path(str(value))
        if path.suffix in WEIGHT_SUFFIXES and path.is_file() and path.resolve() not in {p.resolve() for p in found}:
            found.append(path)
    return found


def effective_settings(settings: TrackingSettings, run_dir: Path | None) -> TrackingSettings:
    """The settings a run reports with: a resumed run's saved ones (``tracking.json``) unless
    ``--report-to`` is given now."""
    saved = read_tracking(Path(run_dir)) if run_dir is not None else {}
    if saved.get("settings") and "report_to" not in settings.model_fields_set:
        given = settings.model_dump(include=settings.model_fields_set)
        return TrackingSettings.model_validate({**saved["settings"], **given})
    return settings


def check_trackers(settings: TrackingSettings, *, resume_dir: str | os.PathLike | None = None) -> None:
    """Refuse now (one line) a tracker that cannot be used: for a recipe that loads its model before
    its run folder exists, so :func:`attach_reporter` would come too late. No-op with
    ``--report-to-optional`` (the warning comes when the reporter is attached)."""
    from .distributed import is_rank_zero
    from .tracking_backends import check_reachable

    settings = effective_settings(settings, Path(resume_dir) if resume_dir else None)
    if settings.report_to_optional or not is_rank_zero():
        return
    for name in settings.trackers:
        check_reachable(name)


def attach_reporter(run, settings: TrackingSettings, config: Any, *, recipe: str, mode: str = "train",
                    resume: bool = False) -> Optional[Reporter]:
    """Open the trackers of ``settings`` for ``run`` and attach them to it (``run.reporter``).

    Call it before any model loads: a tracker that cannot be reached stops the run here with one
    line (or warns, with ``--report-to-optional``). ``resume``: continue the tracker runs recorded in
    ``<run>/tracking.json``, and report where it reported unless ``--report-to`` is given now (then
    ``config.tracking`` is set to those settings). Processes other than rank 0 report nothing (they
    write no evidence either).
    """
    from .distributed import is_rank_zero

    run_dir = Path(run.path)
    saved = read_tracking(run_dir) if resume else {}
    given = settings
    settings = effective_settings(settings, run_dir if resume else None)
    if settings is not given and isinstance(getattr(config, "tracking", None), TrackingSettings):
        config.tracking = settings  # what the recipe reads later (TensorBoard on or off) agrees
    if not settings.trackers or not is_rank_zero():
        return None
    previous = saved.get("runs") or {}
    params = flatten_params(config.model_dump(mode="json")) if hasattr(config, "model_dump") else {}
    tags = run_tags({"recipe": recipe, "mode": mode})
    backends = []
    for name in settings.trackers:
        try:
            backend = open_backend(name, run_dir=run_dir, experiment=experiment_name(name, settings, recipe),
                                   run_name=run_dir.name, previous_id=previous.get(name), tags=tags)
        except ConfigError as exc:
            if not settings.report_to_optional:
                for opened in backends:  # the trackers opened before this one end, marked failed
                    with contextlib.suppress(Exception):
                        opened.close("failed")
                raise
            from .console import warn

            warn(escape(f"{exc} (--report-to-optional: the run goes on without it)"))
            backends.append(Backend.unavailable(name, str(exc)))  # recorded in training_result.json
            continue
        try:
            backend.log_params(params)
        except Exception as exc:  # noqa: BLE001 - params are not worth a run
            backend.fail(f"log params: {describe(exc)}")
        backends.append(backend)
    reporter = Reporter(settings, run_dir, backends)
    write_tracking(run_dir, settings, {b.name: b.run_id for b in backends if b.run_id})
    run.reporter = reporter
    return reporter


def experiment_name(backend: str, settings: TrackingSettings, recipe: str) -> str:
    env = {"mlflow": "MLFLOW_EXPERIMENT_NAME", "wandb": "WANDB_PROJECT"}.get(backend)
    return settings.experiment or (os.environ.get(env) if env else None) or f"kitaeru-{recipe}"


def read_tracking(run_dir: Path) -> dict[str, Any]:
    """``<run>/tracking.json``: ``{"settings": {...}, "runs": {backend: run id}}`` ({} when absent or unreadable)."""
    try:
        data = json.loads((Path(run_dir) / TRACKING_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    runs = data.get("runs") if isinstance(data.get("runs"), dict) else {}
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    return {"settings": settings, "runs": {k: v for k, v in runs.items() if isinstance(v, str)}}


def write_tracking(run_dir: Path, settings: TrackingSettings, ids: Mapping[str, str]) -> None:
    """Remember where this run reports and its tracker run ids, so ``--resume`` continues the same runs."""
    from .storage import atomic_write_json

    runs = {**(read_tracking(run_dir).get("runs") or {}), **ids}
    atomic_write_json(Path(run_dir) / TRACKING_JSON, {"settings": settings.model_dump(mode="json"), "runs": runs})