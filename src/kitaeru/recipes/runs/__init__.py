"""Runs: what became of every training run under a folder, including the ones that died.

The job, in order:

1. **Find** every run folder under ``--runs`` (any folder holding a ``training_result.json``, which
   each training recipe writes from its first second).
2. **Judge** each with :func:`kitaeru.core.run.read_run_status`: its recorded status (``completed``,
   ``failed``, ``interrupted``, ``running``), except that a ``running`` run whose process is gone on
   this host (``kill -9``, a crash, a machine that slept) is ``died``.
3. **List** them with epochs done / planned, the last heartbeat and, for runs that stopped early,
   the command that resumes them.

Entry function: :func:`runs` (the command is ``kitaeru runs``). Light imports only here.
"""

from __future__ import annotations

from typing import Any, Literal

from kitaeru.core.config import RecipeConfig, setting
from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe

__all__ = ["RECIPE", "RunsConfig", "runs"]

MAX_DEPTH = 4  # runs/<recipe-or-root>/<run>/... is as deep as kitaeru writes them


class RunsConfig(RecipeConfig):
    """Where to look for runs."""

    runs: str = setting("runs", "Folder to search for run folders (those holding training_result.json).",
                        metavar="DIR")
    status: list[Literal["completed", "failed", "interrupted", "running", "died"]] = setting([], "Show only runs with this status (repeatable): completed, failed, interrupted, "
                                "running, died.")


def check(config: RunsConfig) -> None:
    from pathlib import Path

    from kitaeru.core.errors import DataError

    if not Path(config.runs).is_dir():
        raise DataError(f"--runs {config.runs}: not found or not a folder")


def runs(config: RunsConfig) -> list[dict[str, Any]]:
    """Every run under ``--runs`` with its status (``died`` for a lost ``running`` run), newest first."""
    import os
    from pathlib import Path

    from kitaeru.core.run import RESULT_JSON, read_run_status

    check(config)
    root = Path(config.runs)
    found: list[dict[str, Any]] = []
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if depth >= MAX_DEPTH:
            dirs[:] = []
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("weights", "tensorboard")]
        if RESULT_JSON in files:
            status = read_run_status(folder)
            if status is not None and (not config.status or status["status"] in config.status):
                found.append(status)
    found.sort(key=lambda r: r.get("heartbeat_at") or "", reverse=True)
    return found


def _summary(result: list[dict[str, Any]]) -> None:
    from kitaeru.core.console import print_table

    rows = []
    for r in result:
        epochs = f"{r.get('epochs_completed') or 0}/{r.get('epochs_planned') or '?'}"
        resume = r.get("resume_command") if r.get("status") in ("died", "interrupted", "failed") else ""
        rows.append((r["run"], r.get("recipe") or "", r.get("status") or "", epochs, r.get("heartbeat_at") or "",
                     resume or ""))
    print_table("kitaeru runs", ["run", "recipe", "status", "epochs", "last heartbeat", "resume with"], rows)


RECIPE = Recipe(
    name="runs",
    help=JOBS["runs"],
    modes=[
        Mode(
            "runs", RunsConfig, runs,
            "List the training runs under a folder: status (completed / failed / interrupted / running / died), "
            "epochs, last heartbeat and the command that resumes a run that stopped.",
            examples=[
                "kitaeru runs",
                "kitaeru runs --runs runs/docclass --status died --status interrupted",
                "kitaeru runs --runs runs --json",
            ],
            summary=_summary, check=check,
        ),
    ],
)
