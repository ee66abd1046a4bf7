"""The command that continues a detect run, true at every moment of it.

Ultralytics can only resume from ``weights/last.pt``, which exists once the first epoch has ended.
Before that, ``--resume`` would answer "no last.pt", so the command a stopped run prints (and
``training_result.json`` / ``kitaeru runs`` show) is the one that starts the same run again in
the same folder, from its saved ``config.yaml``; from the first checkpoint on it is ``--resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kitaeru.core import run_setup
from kitaeru.core.errors import RunInterrupted

from .config import RECIPE, TRAIN_RUNS, TrainConfig

if TYPE_CHECKING:
    from kitaeru.core.run import RunFolder

    from .session import TrainingSession

LAST = "weights/last.pt"


def resume_command(run_dir: Path) -> str:
    return run_setup.resume_command(RECIPE, run_dir)


def restart_command(run_dir: Path) -> str:
    """Start the run in ``run_dir`` again, in the same folder, with its saved (resolved) config;
    spelled from the schema (``--config``, ``--output-dir``, ``--name``, ``--exist-ok``)."""
    run_dir = Path(run_dir)
    return run_setup.OpenedRun(TrainConfig(), run_dir, False, TRAIN_RUNS).restart_command()


def continue_command(run_dir: Path) -> str:
    """``--resume`` once ``weights/last.pt`` exists, else the command that starts the run again."""
    return resume_command(run_dir) if (Path(run_dir) / LAST).is_file() else restart_command(run_dir)


def run_session(run: "RunFolder", session: "TrainingSession", *, recipe: str, resume_first: bool = False) -> dict[str, Any]:
    """``session.execute`` inside the run lifecycle; an interrupt ends with the command that
    continues the run as it is at that moment (said to be a fresh start when nothing was saved)."""
    try:
        with run.lifecycle(resume_command=continue_command(run.path), recipe=recipe, **session.start()):
            return session.execute(resume_first=resume_first)
    except RunInterrupted:
        if (run.path / LAST).is_file():
            raise RunInterrupted(f"interrupted; resume with: {resume_command(run.path)}") from None
        raise RunInterrupted("interrupted before the first epoch ended, so there is no checkpoint to resume; "
                             f"start the same run again with: {restart_command(run.path)}") from None
    finally:
        session.stop_tensorboard()  # also when the lifecycle itself could not start
