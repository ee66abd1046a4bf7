"""Shared test fixtures: the real sample data in ../shared/data and a runner for the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from guards import guard, wait_until

# Tests never open a progress bar or reach for a hub.
os.environ.setdefault("KITAERU_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("KITAERU_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real sample data); tests that need it skip with a reason when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set KITAERU_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    """A tiny random-init Stable Diffusion pipeline folder (``kitaeru sample sd-pipeline``), written once."""
    from kitaeru.recipes.lora.tiny_pipeline import write_tiny_pipeline

    return write_tiny_pipeline(tmp_path_factory.mktemp("sd") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def prepared_floorplans(tmp_path_factory, shared_data) -> Path:
    """Six real floor plans from ../shared/data, captioned by ``lora prepare`` (no validation split)."""
    import shutil

    from kitaeru.recipes.lora.data import prepare_dataset

    raw = tmp_path_factory.mktemp("raw-floorplans")
    for path in sorted((shared_data / "floorplans").glob("*.png"))[:6]:
        shutil.copyfile(path, raw / path.name)
    out = tmp_path_factory.mktemp("prepared-floorplans")
    prepare_dataset(raw, out, val_fraction=0.0, seed=0, min_size=64)
    return out


@pytest.fixture(scope="module")
def one_compute_thread():
    """Tiny models: one torch/Faiss thread is faster and steadier than two when CPUs are shared."""
    import faiss
    import torch

    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(before[0])
    faiss.omp_set_num_threads(before[1])


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """Run the real ``kitaeru`` CLI in-process: ``cli("multimodal", "train", ...)`` → CliResult."""

    def invoke(*args: str) -> CliResult:
        from kitaeru.cli import run

        capsys.readouterr()
        code = run([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return invoke


@pytest.fixture
def cli_subprocess():
    """Run ``kitaeru`` as a separate process (the installed console script's code path)."""

    def invoke(*args: str, timeout: float | None = None, env: dict | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", "kitaeru", *[str(a) for a in args]],
            capture_output=True, text=True, timeout=guard(timeout), env={**os.environ, **(env or {})},
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return invoke


@pytest.fixture
def cli_interrupted():
    """Start ``kitaeru ARGS`` as a process, send it SIGINT (Ctrl-C) once ``ready()`` is true, and
    return its CliResult: ``cli_interrupted(["lora", "train", ...], ready=lambda: (run / "results.csv").exists())``.
    """
    import signal

    def invoke(args, ready, *, timeout: float | None = None, env: dict | None = None,
               parent_ignores_sigint: bool = False, stop_signal: int = signal.SIGINT) -> CliResult:
        # parent_ignores_sigint: started as `nohup … &`, cron or a job runner start it (SIGINT inherited as ignored)
        proc = subprocess.Popen(
            [sys.executable, "-m", "kitaeru", *[str(a) for a in args]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if parent_ignores_sigint else None,
        )
        try:
            try:
                wait_until(ready, "it was ready to interrupt", proc=proc, timeout=timeout)
            except AssertionError as e:
                if proc.poll() is not None:
                    raise AssertionError(f"{e}:\n{proc.communicate()[1][-2000:]}") from None
                raise
            proc.send_signal(stop_signal)
            out, err = proc.communicate(timeout=guard(timeout))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        return CliResult(proc.returncode, out, err)

    return invoke


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests skip cleanly on machines without CUDA."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
