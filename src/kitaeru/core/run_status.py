"""Whether a run still runs: what its ``training_result.json`` says, with a ``running`` run whose
process is gone (same host; a newer process handed the same pid is not the run) reported as
``died``. Read by ``kitaeru runs`` and the dashboard. (Re-exported by :mod:`kitaeru.core.run`.)"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

from .run_dirs import RESULT_JSON


def _pid_alive(pid: Any, started_at: Any = None) -> bool:
    """Whether the run's own process still runs: a positive pid that exists and did not start after
    the run did (a newer process that was handed the same pid is not the run)."""
    try:
        pid = int(pid)
    except (ValueError, TypeError):
        return False
    if pid <= 0:  # os.kill(-1 or 0, 0) asks about every process / our group: always "alive"
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process: alive, if it is the same one
        pass
    created = _process_start_time(pid)
    if created is None or not started_at:
        return True
    try:
        started = datetime.fromisoformat(str(started_at)).timestamp()
    except ValueError:
        return True
    # started_at is whole seconds and the process exists before its run folder: 2 s of slack
    return created <= started + 2.0


def _process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), or None where this cannot be told."""
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - gone meanwhile, or not allowed to look: no verdict
        return None
    try:  # Linux without psutil: field 22 of /proc/PID/stat is the start in clock ticks after boot
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def read_run_status(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """What a run folder's ``training_result.json`` says, with a ``running`` run whose process is
    gone (same host) reported as ``died``; None when the folder holds no result file.

    Keys: run, status, recipe, epochs_completed, epochs_planned, heartbeat_at, pid, host,
    resume_command (for ``died`` and ``interrupted`` runs the command that continues them).
    """
    path = Path(run_dir) / RESULT_JSON
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(result, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as exc:
        return {"run": str(run_dir), "status": "unreadable", "error": f"{path}: {str(exc).splitlines()[0][:200]}"}
    status = result.get("status")
    if status == "running" and result.get("host") == socket.gethostname() and not _pid_alive(result.get("pid"), result.get("started_at")):
        status = "died"
    return {
        "run": str(run_dir),
        "status": status,
        "recipe": result.get("recipe"),
        "epochs_completed": result.get("epochs_completed"),
        "epochs_planned": result.get("epochs_planned"),
        "heartbeat_at": result.get("heartbeat_at"),
        "pid": result.get("pid"),
        "host": result.get("host"),
        "resume_command": result.get("resume_command"),
    }
