"""The suite's only hang guards, and the import probe that replaces "fails in under N seconds".

A test never compares wall-clock seconds: on a busy laptop a correct command can take ten times
longer than on a quiet one. What a test checks instead is *what happened* (the exit code, the
message, which heavy libraries were imported before the error). The only time limit left is a
guard against a hang, and every subprocess and wait in the suite takes it from here, so it is
generous (15 minutes by default; ``KITAERU_TEST_HANG_GUARD=SECONDS`` to change it) and the same
everywhere. Speed claims live in ``benchmarks/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD_S = float(os.environ.get("KITAERU_TEST_HANG_GUARD", "900"))

# Libraries whose import alone costs seconds: a refusal must come before any of them is loaded.
HEAVY_MODULES = ("torch", "lightning", "ultralytics", "faiss", "umap", "open_clip", "timm",
                 "transformers", "sentence_transformers", "diffusers", "streamlit")


def guard(seconds: float | None = None) -> float:
    """The hang guard for one wait: never below the suite's generous default (a caller may only raise it)."""
    return max(HANG_GUARD_S, seconds or 0.0)


def run(command: Sequence[str | os.PathLike], *, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` with captured text output and the suite's hang guard; ``env`` adds to
    this process's environment (a value of None removes that variable)."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    merged = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    return subprocess.run([str(c) for c in command], timeout=guard(kwargs.pop("timeout", None)), env=merged, **kwargs)


def run_python(code: str, *, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -c CODE`` in a fresh interpreter (the way a user's command starts)."""
    return run([sys.executable, "-c", code], env=env, **kwargs)


_PROBE = """\
import atexit, json, os, sys
def _report():
    with open(os.environ["KITAERU_IMPORT_PROBE"], "w") as f:
        json.dump(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r}), f)
atexit.register(_report)
from kitaeru.cli import run
sys.exit(run(sys.argv[1:]))
"""


def kitaeru_with_import_probe(*args, env: dict | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``kitaeru ARGS`` in a fresh interpreter; return the process and the heavy top-level
    modules that had been imported by the time it exited (what "fails before any heavy import"
    means, measured by imports rather than seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "imports.json"
        proc = run([sys.executable, "-c", _PROBE.format(heavy=set(HEAVY_MODULES)), *map(str, args)],
                   env={**(env or {}), "KITAERU_IMPORT_PROBE": str(report)})
        imported = set(json.loads(report.read_text())) if report.exists() else {"<no report: the process died>"}
    return proc, {m.split(".")[0] for m in imported}


def wait_until(ready: Callable[[], bool], what: str, *, proc: subprocess.Popen | None = None,
               timeout: float | None = None, poll_s: float = 0.05) -> None:
    """Poll ``ready()`` until it is true; fail (not hang) if ``proc`` ends first or the guard runs out."""
    deadline = time.monotonic() + guard(timeout)
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"hang guard: {what} never happened")
        time.sleep(poll_s)
