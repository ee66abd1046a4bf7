"""Where this process stands in a multi-process job, read from the launcher's environment.

kitaeru runs no cluster code of its own: Lightning (``--devices N --strategy ddp``), ``torchrun``,
SLURM (``srun``) and SageMaker start the processes and say, in environment variables, which one is
which. This module reads them, in that order of trust:

* ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``: torchrun, SageMaker's torch_distributed, Lightning's
  own children (Lightning sets ``LOCAL_RANK``/``NODE_RANK``/``WORLD_SIZE`` only);
* ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID``: a job started by ``srun``;
* nothing: one process, rank 0 of 1.

And the one rule every recipe follows: **only rank 0 writes** the evidence, the vector DB and the
final artefacts (:func:`is_rank_zero`, :class:`SilentRunFolder`). Lightning's children re-run the
command from the start; rank 0 hands them its run folder in ``KITAERU_RUN_DIR`` (:func:`share_run_dir`)
so an auto-numbered folder (``runs/multimodal2``) is not numbered again.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Mapping

from pydantic import BeforeValidator

from .run import RunFolder

RUN_DIR_ENV = "KITAERU_RUN_DIR"


def _int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Place:
    """This process's ``rank`` of ``world_size``, its ``local_rank`` on the node, and its ``node_rank``."""

    rank: int
    world_size: int
    local_rank: int
    node_rank: int

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    def as_dict(self) -> dict[str, int]:
        return {"rank": self.rank, "world_size": self.world_size, "local_rank": self.local_rank,
                "node_rank": self.node_rank}


def place(env: Mapping[str, str] | None = None) -> Place:
    """This process's place in the job (rank 0 of 1 when no launcher set anything)."""
    saved = None
    if env is not None:  # read a given environment (tests, SageMaker planning) instead of os.environ
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
    try:
        local = _int("LOCAL_RANK")
        node = _int("NODE_RANK") or _int("GROUP_RANK") or 0
        world = _int("WORLD_SIZE")
        rank = _int("RANK")
        if rank is None and _int("SLURM_NTASKS") and (_int("SLURM_NTASKS") or 1) > 1:
            rank, world = _int("SLURM_PROCID") or 0, _int("SLURM_NTASKS")
            local = _int("SLURM_LOCALID") if local is None else local
            node = _int("SLURM_NODEID") or node
        if rank is None:
            # Lightning's children: no RANK, but LOCAL_RANK and NODE_RANK; rank 0 only when both are 0
            # (the exact global rank of another node's process does not matter here, only that it is not 0)
            rank = node * max(1, _int("LOCAL_WORLD_SIZE") or 1) + (local or 0)
        return Place(rank=rank, world_size=max(1, world or 1), local_rank=local or 0, node_rank=node)
    finally:
        if saved is not None:
            os.environ.clear()
            os.environ.update(saved)


def is_rank_zero() -> bool:
    """Whether this process is the one that writes (rank 0, or the only process)."""
    return place().is_zero


def shard(items: list, rank: int | None = None, world_size: int | None = None) -> list:
    """This rank's share of ``items``: every ``world_size``-th one from ``rank`` (round-robin keeps
    the shares equal to one item whatever the order of sizes)."""
    here = place()
    rank = here.rank if rank is None else rank
    world_size = here.world_size if world_size is None else world_size
    return items[rank::world_size]


def stdout_to_stderr_off_rank_zero() -> None:
    """On a non-zero rank, send stdout to stderr: the launcher's children share the terminal, and
    stdout carries the one result (``--json``) of rank 0 alone."""
    if is_rank_zero():
        return
    import sys

    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


# ---- the run folder handed from rank 0 to Lightning's children ------------------------------------------
def share_run_dir(path: str | os.PathLike) -> None:
    """Rank 0: tell the processes Lightning (or any launcher) starts from now on which folder is the run's."""
    os.environ[RUN_DIR_ENV] = str(Path(path))


def shared_run_dir() -> str | None:
    """A non-zero rank: the run folder rank 0 chose (None on rank 0 or when none was handed over)."""
    if is_rank_zero():
        return None
    return os.environ.get(RUN_DIR_ENV) or None


class SilentRunFolder(RunFolder):
    """The run folder as a non-zero rank sees it: readable (rows, result, checkpoints), never written.

    Every writing method is a no-op and :meth:`lifecycle` only passes the body through, so a recipe
    runs the same code on every rank and rank 0 alone leaves the evidence.
    """

    def __init__(self, path: str | os.PathLike, *, tensorboard: bool = False):  # noqa: ARG002 - same signature
        self.path = Path(path)
        self.tensorboard_enabled = False
        self._writer = None
        self._rows = self.read_results()
        self._skipped = []
        self._live = None
        self._status = None
        import time

        self._started = time.time()

    @property
    def weights_dir(self) -> Path:  # rank 0 may not have made the run folder yet (torchrun starts all at once)
        d = self.path / "weights"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def save_config(self, config) -> Path:  # noqa: ARG002
        return self.path / "config.yaml"

    def log_epoch(self, row: Mapping[str, Any], *, step: int | None = None) -> None:  # noqa: ARG002
        self._rows = [r for r in self._rows if r.get("epoch") != row.get("epoch")] + [dict(row)]

    def log_scalars(self, scalars: Mapping[str, float], step: int) -> None:  # noqa: ARG002
        return None

    def write_result(self, status: str, **fields: Any) -> Path:  # noqa: ARG002
        self._status = status
        return self.result_json

    def heartbeat(self, **fields: Any) -> None:  # noqa: ARG002
        return None

    def flush(self) -> None:  # nothing is ever written in the background here
        return None

    @contextlib.contextmanager
    def lifecycle(self, *, resume_command: str, **fields: Any) -> Iterator["RunFolder"]:  # noqa: ARG002
        yield self


def run_folder(path: str | os.PathLike, *, tensorboard: bool = True) -> RunFolder:
    """A :class:`RunFolder` on rank 0, a :class:`SilentRunFolder` on every other rank."""
    return RunFolder(path, tensorboard=tensorboard) if is_rank_zero() else SilentRunFolder(path)


# ---- the settings every multi-device recipe takes (declared once, used in their schemas) -------
def _device_count(value: Any) -> str:
    text = str(value).strip().lower()
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise ValueError("give a number of devices (1, 2, ...) or auto")
    return text


DeviceCount = Annotated[str, BeforeValidator(_device_count)]
Strategy = Literal["auto", "ddp", "fsdp"]
DEVICES_HELP = "Devices of --device's kind to train on: N or auto (all). N > 1 starts N processes (ddp)."
NUM_NODES_HELP = "Machines in a multi-node run (started by torchrun, SLURM or SageMaker on each node)."
STRATEGY_HELP = "How several devices share the work: auto (ddp when > 1 device), ddp, or fsdp (GPUs only)."
