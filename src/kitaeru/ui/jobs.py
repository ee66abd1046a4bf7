"""Trainings started from the dashboard: ``python -m kitaeru <recipe> train ...`` as a subprocess.

Each job gets a log file and a small JSON record in ``<first root>/.kitaeru-ui/jobs/`` so the page
finds it again after a browser refresh (or a dashboard restart). Stopping sends SIGINT to the job's
process group, exactly what Ctrl-C in a terminal does: the run ends ``interrupted`` with exit 130
and prints the command that resumes it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

JOBS_DIR = ".kitaeru-ui/jobs"

# The main options the form offers per recipe: (flag, label, kind, default).
MAIN_OPTIONS: dict[str, list[tuple[str, str, str, Any]]] = {
    "detect": [("--data-dir", "data.yaml", "text", ""), ("--model", "model", "text", "yolov8n.pt"),
               ("--epochs", "epochs", "int", 10), ("--batch-size", "batch size (0 = from the GPU tier)", "int", 0),
               ("--image-size", "image size (0 = from the GPU tier)", "int", 0), ("--device", "device", "text", "auto")],
    "multimodal": [("--data-dir", "scene folder (empty = built-in sample data)", "text", ""),
                   ("--epochs", "epochs", "int", 30), ("--batch-size", "batch size", "int", 32),
                   ("--device", "device", "text", "auto")],
    "docclass": [("--cfg-name", "preset", "text", "cpu_quickstart"), ("--data-dir", "template pool", "text", ""),
                 ("--epochs", "epochs (0 = preset's)", "int", 0), ("--device", "device", "text", "auto")],
    "lora": [("--data-dir", "prepared floor plans", "text", ""), ("--pretrained-model", "base pipeline", "text", ""),
             ("--epochs", "epochs", "int", 10), ("--resolution", "resolution", "int", 512),
             ("--batch-size", "batch size", "int", 1), ("--device", "device", "text", "auto")],
}


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

    @property
    def display_command(self) -> str:
        return "kitaeru " + shlex.join(self.command[3:])


def training_command(recipe: str, options: Mapping[str, Any], output_dir: str, extra: str = "") -> list[str]:
    """``python -m kitaeru <recipe> train`` with the form's options (empty / zero values left to defaults)."""
    if recipe not in MAIN_OPTIONS:
        raise ValueError(f"{recipe}: not a training recipe the dashboard starts")
    args = [sys.executable, "-m", "kitaeru", recipe, "train", "--output-dir", output_dir]
    for flag, value in options.items():
        if value in (None, "", 0):
            continue
        args += [flag, str(value)]
    if recipe == "multimodal" and not options.get("--data-dir"):
        args.append("--use-sample-data")
    args += shlex.split(extra or "")
    return args


def jobs_dir(root: Path) -> Path:
    return root / JOBS_DIR


def start_job(recipe: str, command: list[str], root: Path, output_dir: str) -> Job:
    folder = jobs_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{recipe}-{os.getpid() % 1000}{int(time.time() * 1000) % 1000:03d}"
    log = folder / f"{job_id}.log"
    env = {**os.environ, "KITAERU_NO_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    _PROCESSES[proc.pid] = proc
    job = Job(id=job_id, recipe=recipe, command=command, pid=proc.pid, log=str(log), started=time.time(),
              output_dir=output_dir)
    _save(folder, job)
    return job


_PROCESSES: dict[int, subprocess.Popen] = {}


def _save(folder: Path, job: Job) -> None:
    tmp = folder / f".{job.id}.json.tmp"
    tmp.write_text(json.dumps(asdict(job)), encoding="utf-8")
    os.replace(tmp, folder / f"{job.id}.json")


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


def log_tail(job: Job, lines: int = 40) -> str:
    try:
        with open(job.log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64_000))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log not readable: {exc})"
    # Progress bars redraw with carriage returns: keep the last state of each line.
    cleaned = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(cleaned[-lines:])
