"""Lightning plumbing shared by every recipe that trains with Lightning.

Lightning already does checkpointing, AMP, DDP, TensorBoard and progress; what is ours:

* :func:`trainer_device_kwargs`: accelerator, devices and precision from kitaeru's device choice
  (bf16-mixed where the GPU supports it, 16-mixed on older GPUs, 32-true on CPU/MPS), and the
  ``--devices N --num-nodes M --strategy ddp|fsdp`` of a multi-device run (Lightning launches or
  joins the processes; see :mod:`kitaeru.core.distributed` for who writes);
* :func:`quiet_lightning`: Lightning's start-up notices and internal deprecation warnings kept out
  of the user's terminal (real warnings still show);
* :func:`progress_callbacks`: a Rich progress bar on stderr (stdout stays for ``--json``), none
  when ``KITAERU_NO_PROGRESS`` is set;
* :class:`EvidenceCallback`: the ``results.csv`` row per epoch (1-based epoch, seconds, the
  epoch's own metrics, lr), so every recipe leaves the same evidence whichever engine trained it.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Any, Callable, Iterator

import lightning as L

from .device import DeviceInfo
from .run import RunFolder


def trainer_device_kwargs(device: DeviceInfo, precision: str | None = None, *, devices: int | str | None = None,
                          num_nodes: int = 1, strategy: str = "auto") -> dict[str, Any]:
    """``accelerator``/``devices``/``precision`` (and ``num_nodes``/``strategy``) for ``L.Trainer``.

    ``precision`` (a Lightning precision string) wins when given; otherwise mixed precision on CUDA.
    ``devices`` (``N`` or ``"auto"``) replaces the one resolved device by N of its kind: Lightning
    then starts the other processes itself (``ddp``), or joins the ones torchrun / SLURM / SageMaker
    started. On CPU, N processes talk over gloo. ``None`` or 1 with one node keeps one device.
    """
    many = _many_devices(devices, num_nodes)
    if device.type == "cuda":
        index = int(device.device.split(":")[1]) if ":" in device.device else 0
        auto = "bf16-mixed" if device.bf16 else "16-mixed"
        kwargs = {"accelerator": "gpu", "devices": [index], "precision": precision or auto}
    elif device.type == "mps":
        kwargs = {"accelerator": "mps", "devices": 1, "precision": precision or "32-true"}
    else:
        cpu_precision = precision if precision in (None, "32-true", "32", "bf16-mixed", "bf16-true", "64-true") else "32-true"
        kwargs = {"accelerator": "cpu", "devices": 1, "precision": cpu_precision or "32-true"}
    if many:
        kwargs["devices"] = _devices_value(devices)
        kwargs["num_nodes"] = int(num_nodes)
        kwargs["strategy"] = _strategy(strategy, kwargs["accelerator"])
    elif strategy not in (None, "auto"):
        kwargs["strategy"] = _strategy(strategy, kwargs["accelerator"])
    return kwargs


def _devices_value(devices: int | str | None) -> int | str:
    if devices is None:
        return 1
    text = str(devices).strip()
    return int(text) if text.isdigit() else text


def _many_devices(devices: int | str | None, num_nodes: int) -> bool:
    value = _devices_value(devices)
    return num_nodes > 1 or value == "auto" or (isinstance(value, int) and value > 1) or \
        (isinstance(value, str) and value not in ("", "1"))


def _strategy(strategy: str | None, accelerator: str) -> str:
    """``ddp`` on CPU needs no extra word (Lightning picks gloo); ``fsdp`` is GPU-only, said plainly."""
    name = (strategy or "auto").lower()
    if name == "fsdp" and accelerator == "cpu":
        from .errors import ConfigError

        raise ConfigError("--strategy fsdp needs GPUs; on CPU use --strategy ddp")
    return name


def distributed_trainer_kwargs(config: Any) -> dict[str, Any]:
    """The ``devices``/``num_nodes``/``strategy`` of a config that declares them (any recipe's)."""
    return {"devices": getattr(config, "devices", None), "num_nodes": int(getattr(config, "num_nodes", 1) or 1),
            "strategy": getattr(config, "strategy", "auto") or "auto"}


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Keep Lightning's start-up notices (accelerator listing, tips) and its internal deprecation
    warnings out of the user's terminal; real warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in (
                r".*isinstance\(treespec, LeafSpec\).*",
                r".*does not have many workers.*",
                r".*number of training batches.*smaller than the logging interval.*",
                r".*Checkpoint directory .* exists and is not empty.*",  # resume into the same folder
                # our epoch metrics are computed from all-gathered features, the same on every rank
                r".*when logging on epoch level in distributed setting to accumulate the metric.*",
                # Fabric.all_gather's own call into torch (Lightning 2.6 on torch 2.14)
                r".*torch\.distributed\.nn\.functional\.all_gather is deprecated.*",
            ):
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def ctrl_c_stays_an_interrupt(trainer: L.Trainer) -> Iterator[None]:
    """Lightning turns Ctrl-C into ``sys.exit(1)`` and then ignores SIGINT for good; give the run
    lifecycle its KeyboardInterrupt back (status ``interrupted``, exit 130) and Ctrl-C its handler."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit:
        if trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if main and handler is not None:
            signal.signal(signal.SIGINT, handler)


def progress_enabled() -> bool:
    from .console import progress_disabled

    return not progress_disabled()


def progress_callbacks() -> list[L.Callback]:
    """Lightning's Rich progress bar on stderr, or nothing when progress is switched off."""
    if not progress_enabled():
        return []
    from lightning.pytorch.callbacks import RichProgressBar

    class OneBasedProgressBar(RichProgressBar):
        """Lightning labels the third of three epochs "Epoch 2/2"; results.csv and every message of
        ours count from 1, so the bar does too ("Epoch 3/3")."""

        def _get_train_description(self, current_epoch: int) -> str:
            text = f"Epoch {current_epoch + 1}"
            if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
                text += f"/{self.trainer.max_epochs}"
            width = len(getattr(self, "validation_description", ""))
            return f"{text:{width}}" if width > len(text) else text

    return [OneBasedProgressBar(console_kwargs={"stderr": True})]


class EvidenceCallback(L.Callback):
    """At the end of each training epoch, append ``callback_metrics`` + seconds + lr to ``results.csv``.

    Why ``on_train_epoch_end``: by then Lightning has run this epoch's validation and reduced the
    epoch-level training metrics (``epoch_end_reached``), so the row holds the epoch's own numbers.
    Callbacks' ``on_validation_epoch_end`` runs *before* the module's, so a metric the module
    computes there (AUROC over all validation features, say) would be one epoch stale.
    """

    def __init__(self, run: RunFolder, *, log_tensorboard: bool = False,
                 extra: Callable[[L.Trainer, L.LightningModule], dict[str, Any]] | None = None):
        # Lightning's own TensorBoardLogger usually writes the scalars; avoid writing them twice.
        # ``extra``: recipe-specific numbers for the row (a temperature, a mean loss it keeps itself).
        self.run = run
        self.log_tensorboard = log_tensorboard
        self.extra = extra
        self._epoch_start = time.time()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.time()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        row: dict[str, Any] = {"epoch": trainer.current_epoch + 1, "seconds": round(time.time() - self._epoch_start, 3)}
        for key, value in trainer.callback_metrics.items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                continue
        if self.extra is not None:
            row.update(self.extra(trainer, pl_module))
        optimizers = trainer.optimizers
        if optimizers:
            row["lr"] = float(optimizers[0].param_groups[0]["lr"])
        if self.log_tensorboard:
            self.run.log_epoch(row)
        else:
            enabled, self.run.tensorboard_enabled = self.run.tensorboard_enabled, False
            try:
                self.run.log_epoch(row)
            finally:
                self.run.tensorboard_enabled = enabled
