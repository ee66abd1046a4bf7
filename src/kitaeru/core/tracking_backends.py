"""The trackers behind ``--report-to``, each on its library's own client through Lightning's loggers.

* ``mlflow``: Lightning's ``MLFlowLogger`` (an ``MlflowClient``) at ``MLFLOW_TRACKING_URI`` (MLflow's
  own default without it); resumed with ``run_id=``.
* ``wandb``: ``wandb.init`` wrapped in Lightning's ``WandbLogger``, ``WANDB_PROJECT`` / ``WANDB_MODE``
  honoured; resumed with ``id=`` + ``resume="allow"``.
* ``csv``: Lightning's ``CSVLogger`` in ``<run>/csv_logs/`` (every metric, per-step ones too, and
  ``hparams.yaml``); ``results.csv`` is written in any case.

Every backend has the same small face (``log_params``, ``log_metrics``, ``set_tags``,
``log_artifacts``, ``close``, ``link``); :class:`kitaeru.core.tracking.Reporter` drives them and
turns any exception into the backend's recorded ``error``.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import ConfigError, require

# kitaeru's final status -> MLflow's run status.
MLFLOW_STATUS = {"completed": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
# W&B marks a run with a non-zero exit code as failed; 130 is what kitaeru exits with on Ctrl-C.
WANDB_EXIT_CODE = {"completed": 0, "interrupted": 130, "failed": 1}


class Backend:
    name = ""

    def __init__(self) -> None:
        self.error: str | None = None
        self.run_id: str | None = None
        self.experiment: str | None = None
        self.url: str | None = None

    @classmethod
    def unavailable(cls, name: str, error: str) -> "Backend":
        """A tracker that could not be opened (``--report-to-optional``): only its error is reported."""
        backend = cls()
        backend.name, backend.error = name, error
        return backend

    def fail(self, message: str) -> None:
        """Record the first failure (training goes on; ``training_result.json`` shows it)."""
        if self.error is None:
            from .console import warn

            self.error = message
            warn(escape(f"--report-to {self.name}: {message} (training goes on; the local evidence is complete)"))

    def link(self) -> dict[str, Any]:
        return {"backend": self.name, "run_id": self.run_id, "url": self.url, "experiment": self.experiment,
                "error": self.error}


def open_backend(name: str, **kwargs: Any) -> Backend:
    kinds = {"mlflow": MlflowBackend, "wandb": WandbBackend, "csv": CsvBackend}
    return kinds[name](**kwargs)


def mlflow_metric_name(name: str) -> str:
    """MLflow refuses parentheses in metric names: ``metrics/mAP50(B)`` -> ``metrics/mAP50B`` (as
    Lightning's logger and Ultralytics' own MLflow callback rename them)."""
    return re.sub(r"[^a-zA-Z0-9_/. -]+", "", name)


@contextlib.contextmanager
def _mlflow_http(retries: int, timeout: int) -> Iterator[None]:
    """MLflow retries an unreachable server for minutes by default; at start one quick try says it
    plainly, and during training a few retries keep a dead server from stalling the run. A value
    the user set in the environment wins."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)}
    added = [key for key in wanted if key not in os.environ]
    for key in added:
        os.environ[key] = wanted[key]
    try:
        # MLflow prints "View run ... at: URL" on stdout, which carries kitaeru's --json result.
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def mlflow_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else MLflow's own default. The environment first: Lightning's logger
    sets MLflow's process-wide URI, which would otherwise outlive a changed variable in a long session."""
    mlflow = require("mlflow", "mlflow", "reporting to MLflow")
    return os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()


def check_reachable(name: str) -> None:
    """A :class:`ConfigError` now if tracker ``name`` cannot be used, for a recipe that must load its
    model before the run folder (and so the tracker run) exists; it asks the server one cheap question."""
    if name == "mlflow":
        uri = mlflow_uri()
        from mlflow.tracking import MlflowClient

        try:
            with _mlflow_http(retries=0, timeout=15):
                MlflowClient(uri).search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, the user gets one line
            raise ConfigError(f"--report-to mlflow: cannot use the tracking server {uri} ({describe(exc)})") from None
    elif name == "wandb":
        require("wandb", "wandb", "reporting to Weights & Biases")
        check_wandb_login()


def check_wandb_login() -> str:
    """W&B's mode; online without an API key is refused here, so ``wandb.init`` never stops to prompt."""
    mode = os.environ.get("WANDB_MODE", "online").lower()
    if mode not in ("offline", "disabled", "dryrun") and not _wandb_credentials():
        raise ConfigError("--report-to wandb: no W&B API key (run `wandb login`, set WANDB_API_KEY, "
                          "or WANDB_MODE=offline to keep the run on disk)")
    return mode


class MlflowBackend(Backend):
    name = "mlflow"

    def __init__(self, *, run_dir: Path, experiment: str, run_name: str, previous_id: str | None,
                 tags: Mapping[str, str]) -> None:
        super().__init__()
        from lightning.pytorch.loggers import MLFlowLogger

        self.uri = mlflow_uri()
        try:
            with _mlflow_http(retries=0, timeout=15):
                self.logger = self._logger(MLFlowLogger, experiment, run_name, previous_id, dict(tags))
                client = self.logger.experiment
                self.run_id = self.logger.run_id
                if previous_id and self.run_id == previous_id:
                    client.update_run(self.run_id, status="RUNNING")  # a resumed run is running again
                self.experiment_id = self.logger.experiment_id
                self.experiment = client.get_experiment(self.experiment_id).name
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the client raises, the user gets one line
            raise ConfigError(f"--report-to mlflow: cannot use the tracking server {self.uri} ({describe(exc)})") from None
        if self.uri.startswith(("http://", "https://")):
            self.url = f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def _logger(self, cls, experiment: str, run_name: str, previous_id: str | None, tags: dict):
        if previous_id:
            from mlflow.exceptions import MlflowException

            logger = cls(experiment_name=experiment, tracking_uri=self.uri, run_id=previous_id)
            try:
                _ = logger.experiment
                return logger
            except MlflowException as exc:
                if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                    raise
                from .console import warn

                warn(f"--report-to mlflow: run {previous_id} no longer exists on {self.uri}; starting a new one")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        if client.get_experiment_by_name(experiment) is None:  # made here: Lightning would log a warning
            client.create_experiment(experiment)
        return cls(experiment_name=experiment, run_name=run_name, tracking_uri=self.uri, tags=tags)

    @property
    def client(self):
        return self.logger.experiment

    def log_params(self, params: Mapping[str, Any]) -> None:
        with _mlflow_http(retries=2, timeout=30):
            # MLflow params are write-once: a resumed run keeps the values it started with.
            logged = self.client.get_run(self.run_id).data.params
            self.logger.log_hyperparams({k: v for k, v in params.items() if k not in logged})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        with _mlflow_http(retries=2, timeout=30):
            self.logger.log_metrics({mlflow_metric_name(k): v for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        with _mlflow_http(retries=2, timeout=30):
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, files: list[Path], weights: list[Path]) -> None:
        with _mlflow_http(retries=2, timeout=120):
            for path in files:
                self.client.log_artifact(self.run_id, str(path))
            for path in weights:
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), f"weights/{path.name}")
                else:
                    self.client.log_artifact(self.run_id, str(path), "weights")

    def close(self, status: str) -> None:
        with _mlflow_http(retries=2, timeout=30):
            self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))


def _wandb_credentials() -> bool:
    """Whether online W&B has an API key (environment or ``~/.netrc``), so ``wandb.init`` never
    stops to prompt for one."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbBackend(Backend):
    name = "wandb"

    def __init__(self, *, run_dir: Path, experiment: str, run_name: str, previous_id: str | None,
                 tags: Mapping[str, str]) -> None:
        super().__init__()
        wandb = require("wandb", "wandb", "reporting to Weights & Biases")
        from lightning.pytorch.loggers import WandbLogger

        mode = check_wandb_login()
        # console="off": W&B would otherwise wrap stdout, which carries kitaeru's --json result.
        settings = wandb.Settings(console="off", quiet=True, init_timeout=60, x_disable_stats=True)
        try:
            # wandb.init called here with exactly these arguments (Lightning's own call adds ones W&B
            # now warns about); the logger then logs into this run.
            run = wandb.init(name=run_name, dir=str(run_dir), project=experiment, id=previous_id, resume="allow",
                             tags=[f"{k}:{v}"[:64] for k, v in tags.items()], settings=settings)
            self.logger = WandbLogger(experiment=run)
        except Exception as exc:  # noqa: BLE001 - whatever wandb raises, the user gets one line
            raise ConfigError(f"--report-to wandb: cannot start a W&B run ({describe(exc)})") from None
        self.run = run
        self.run_id, self.experiment = run.id, run.project
        self.url = getattr(run, "url", None) if mode == "online" else None

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.logger.log_metrics(dict(metrics), step=step)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        wanted = [f"{k}:{v}"[:64] for k, v in tags.items()]
        self.run.tags = tuple(dict.fromkeys([*(self.run.tags or ()), *wanted]))

    def log_artifacts(self, files: list[Path], weights: list[Path]) -> None:
        import wandb

        evidence = wandb.Artifact(f"evidence-{self.run_id}", type="evidence")
        for path in files:
            evidence.add_file(str(path))
        self.run.log_artifact(evidence)
        if weights:
            model = wandb.Artifact(f"weights-{self.run_id}", type="model")
            for path in weights:
                if path.is_dir():
                    model.add_dir(str(path), name=path.name)
                else:
                    model.add_file(str(path))
            self.run.log_artifact(model)

    def close(self, status: str) -> None:
        self.run.summary["status"] = status
        self.run.finish(exit_code=WANDB_EXIT_CODE.get(status, 1))


class CsvBackend(Backend):
    name = "csv"

    def __init__(self, *, run_dir: Path, experiment: str, run_name: str, previous_id: str | None,
                 tags: Mapping[str, str]) -> None:  # noqa: ARG002 - the same face as every backend
        super().__init__()
        import csv
        import warnings

        from lightning.pytorch.loggers import CSVLogger

        self.run_id = "csv_logs"  # the folder: recorded in tracking.json so a resume keeps its rows
        self.logger = CSVLogger(save_dir=str(run_dir), name="csv_logs", version="")
        self.tags = dict(tags)
        metrics_file = Path(self.logger.log_dir) / "metrics.csv"
        kept: list[dict[str, str]] = []
        if previous_id and metrics_file.is_file():
            with open(metrics_file, newline="", encoding="utf-8") as fh:
                kept = list(csv.DictReader(fh))
        with warnings.catch_warnings():  # Lightning clears an existing metrics.csv (and says so): a
            warnings.simplefilter("ignore")  # resumed run writes back the rows it had, a new run starts empty
            writer = self.logger.experiment
        for row in kept:
            step = row.pop("step", "")
            values = {k: float(v) for k, v in row.items() if v not in ("", None)}
            if values and step != "":
                writer.log_metrics(values, int(float(step)))
        self.logger.save()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.logger.log_hyperparams({**self.tags, **params})
        self.logger.save()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.logger.log_metrics(dict(metrics), step=step)
        self.logger.save()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def log_artifacts(self, files: list[Path], weights: list[Path]) -> None:
        """The files are already in the run folder beside ``csv_logs/``."""

    def close(self, status: str) -> None:
        self.logger.finalize("success" if status == "completed" else status)


def describe(exc: BaseException) -> str:
    """One short line for a client's exception: the network cause when there is one (the clients'
    own messages run to several hundred characters of retry details)."""
    text = " ".join(str(exc).split())
    for needle, said in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                         ("nodename nor servname", "unknown host"), ("timed out", "timed out"),
                         ("Max retries exceeded", "no answer")):
        if needle in text:
            return said
    return f"{type(exc).__name__}: {text[:240]}" if text else type(exc).__name__


def escape(text: str) -> str:
    """Messages go through Rich, where ``[...]`` (an errno, a list) would be read as markup."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
