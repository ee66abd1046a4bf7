"""Trainings started from the dashboard: ``kitaeru <recipe> train ...`` as a subprocess.

Each job gets a log file and a small JSON record in ``<first root>/.kitaeru-ui/jobs/`` so the page
finds it again after a browser refresh (or a dashboard restart). Stopping sends SIGINT to the job's
process group, exactly what Ctrl-C in a terminal does: the run ends ``interrupted`` with exit 130
and prints the command that resumes it, which :func:`resume_job` starts as a new job.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .forms import TRAINING_RECIPES, training_command  # noqa: F401 - the form's command, re-exported

JOBS_DIR = ".kitaeru-ui/jobs"
# A parent that is not an interactive shell (nohup, cron, a service) may start the dashboard with
# SIGINT ignored; an ignored signal stays ignored across exec, and Python then installs no Ctrl-C
# handler, so Stop would do nothing. The job's interpreter restores Python's own handler first,
# then runs ``python -m kitaeru`` in the same process (preexec_fn is unsafe in Streamlit's threads).
_BOOT = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
         "sys.argv = ['kitaeru'] + sys.argv[1:]; runpy.run_module('kitaeru', run_name='__main__', alter_sys=True)")
_RESUME_LINE = re.compile(r"resume with: (kitaeru \S+ train --resume .+?)\s*$", re.MULTILINE)


@dataclass
class Job:
    id: str
    recipe: str
    command: list[str]
    pid: int
    log: str
    started: float
    output_dir: str
    returncode: int | None = None
    run_dir: str | None = None  # known up front for a resumed run

    @property
    def display_command(self) -> str:
        return "kitaeru " + shlex.join(self.command[3:])


def jobs_dir(root: Path) -> Path:
    return root / JOBS_DIR


def launch_argv(command: list[str]) -> list[str]:
    """The argv that runs ``command`` (``python -m kitaeru ...``) with Ctrl-C handling restored."""
    if command[1:3] != ["-m", "kitaeru"]:
        raise ValueError(f"{shlex.join(command)}: not a kitaeru command")
    return [command[0], "-c", _BOOT, *command[3:]]


def start_job(recipe: str, command: list[str], root: Path, output_dir: str, run_dir: str | None = None) -> Job:
    folder = jobs_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{recipe}-{os.getpid() % 1000}{int(time.time() * 1000) % 1000:03d}"
    log = folder / f"{job_id}.log"
    # No progress bars (they redraw in place), but one plain line per epoch for the log tail.
    env = {**os.environ, "KITAERU_NO_PROGRESS": "1", "KITAERU_PROGRESS_LINES": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(launch_argv(command), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
    _PROCESSES[proc.pid] = proc
    job = Job(id=job_id, recipe=recipe, command=command, pid=proc.pid, log=str(log), started=time.time(),
              output_dir=output_dir, run_dir=run_dir)
    _save(folder, job)
    return job


_PROCESSES: dict[int, subprocess.Popen] = {}


def _save(folder: Path, job: Job) -> None:
    from kitaeru.core.storage import atomic_write_text

    atomic_write_text(folder / f"{job.id}.json", json.dumps(asdict(job)))


def list_jobs(root: Path) -> list[Job]:
    """The jobs started from this dashboard under ``root``, newest first, their exit codes refreshed."""
    folder = jobs_dir(root)
    if not folder.is_dir():
        return []
    jobs = []
    for path in sorted(folder.glob("*.json"), reverse=True):
        try:
            job = Job(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue
        if job.returncode is None:
            code = poll(job)
            if code is not None:
                job.returncode = code
                _save(folder, job)
        jobs.append(job)
    return jobs


def poll(job: Job) -> int | None:
    """The exit code, or None while it runs (a job of an earlier dashboard: -1 once its pid is gone)."""
    proc = _PROCESSES.get(job.pid)
    if proc is not None:
        return proc.poll()
    try:
        os.kill(job.pid, 0)
    except ProcessLookupError:
        return -1
    except PermissionError:
        return None
    return None


def stop_job(job: Job) -> bool:
    """Ctrl-C for the job: SIGINT to its process group. False when it had already ended."""
    if poll(job) is not None:
        return False
    try:
        os.killpg(job.pid, signal.SIGINT)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def wait(job: Job, timeout: float) -> int | None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        code = poll(job)
        if code is not None:
            return code
        time.sleep(0.1)
    return None


def _read_log(job: Job, limit: int = 64_000) -> str:
    with open(job.log, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - limit))
        return fh.read().decode("utf-8", errors="replace")


def log_tail(job: Job, lines: int = 40) -> str:
    try:
        text = _read_log(job)
    except OSError as exc:
        return f"(log not readable: {exc})"
    # Progress bars redraw with carriage returns: keep the last state of each line.
    cleaned = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(cleaned[-lines:])


@dataclass
class Outcome:
    """How a job stands: ``running``, ``completed``, ``interrupted``, ``failed`` (or ``gone``)."""

    state: str
    message: str
    resume: str | None = None  # the printed resume command (``kitaeru <recipe> train --resume RUN``)


def outcome(job: Job) -> Outcome:
    code = job.returncode if job.returncode is not None else poll(job)
    if code is None:
        return Outcome("running", f"running (pid {job.pid})")
    try:
        text = _read_log(job)
    except OSError:
        text = ""
    found = _RESUME_LINE.findall(text)
    resume = found[-1] if found else None
    if code == 0:
        return Outcome("completed", "completed (exit 0)")
    if code == 130:
        return Outcome("interrupted", "interrupted (exit 130): the run can be resumed", resume)
    if code == -1:
        return Outcome("gone", "ended while the dashboard was not watching (exit code unknown)", resume)
    errors = [line.strip() for line in text.splitlines() if line.strip().startswith("error:")]
    reason = errors[-1] if errors else (text.strip().splitlines() or ["(no output)"])[-1].strip()
    return Outcome("failed", f"failed (exit {code}): {reason}", resume)


def resume_job(job: Job, roots: Any) -> Job:
    """Start the resume command a stopped job printed, as a new job (ValueError when there is none
    or it points outside the run folders)."""
    found = outcome(job).resume
    if not found:
        raise ValueError(f"{job.id}: no resume command in its log")
    words = shlex.split(found)
    if len(words) < 5 or words[0] != "kitaeru" or words[1] not in TRAINING_RECIPES or words[2:4] != ["train", "--resume"]:
        raise ValueError(f"{found}: not a resume command the dashboard runs")
    run_dir = words[4]
    roots.resolve(run_dir)  # OutsideRoots (a PermissionError) for a run outside the watched folders
    command = [sys.executable, "-m", "kitaeru", *words[1:]]
    return start_job(words[1], command, roots.paths[0], job.output_dir, run_dir=run_dir)


def job_run_dir(job: Job) -> Path | None:
    """The run folder a job writes: recorded for a resume, else the run under its output folder
    whose ``training_result.json`` names the job's pid."""
    if job.run_dir:
        return Path(job.run_dir)
    base = Path(job.output_dir)
    if not base.is_dir():
        return None
    for result in [base / "training_result.json", *base.glob("*/training_result.json"),
                   *base.glob("*/*/training_result.json")]:
        try:
            if json.loads(result.read_text(encoding="utf-8")).get("pid") == job.pid:
                return result.parent
        except (OSError, ValueError, AttributeError):
            continue
    return None
