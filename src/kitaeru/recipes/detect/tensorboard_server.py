"""A TensorBoard server over a run's ``tensorboard/`` folder while the run trains.

Started as a child process on the requested port (0 = any free port) when TensorBoard is installed
and the port is free; otherwise the run goes on without it and says why. A background thread
notes when the server first answers. The server stops with the command (use
``tensorboard --logdir <run>/tensorboard`` to look at a finished run).
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class TensorBoardServer:
    """A running (or refused) server and what is known about it."""

    logdir: Path
    port: int | None = None
    process: subprocess.Popen | None = None
    reason: str | None = None  # why there is no server
    ready_after_seconds: float | None = None
    started_at: float = field(default_factory=time.time)
    _watcher: threading.Thread | None = None

    @property
    def url(self) -> str | None:
        return f"http://localhost:{self.port}/" if self.process is not None else None

    def _watch(self) -> None:
        deadline = self.started_at + 120
        while time.time() < deadline and self.process is not None and self.process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/", timeout=1) as response:
                    if response.status == 200:
                        self.ready_after_seconds = round(time.time() - self.started_at, 2)
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.25)

    def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first answer (returns whether it answered)."""
        if self._watcher is not None:
            self._watcher.join(timeout)
        return self.ready_after_seconds is not None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._watcher is not None:
            self._watcher.join(timeout=2)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "port": self.port,
            "logdir": str(self.logdir),
            "pid": self.process.pid if self.process is not None else None,
            "answered_after_seconds": self.ready_after_seconds,
            "not_started_because": self.reason,
        }


def start_tensorboard(logdir: str | Path, port: int, log_file: str | Path | None = None) -> TensorBoardServer:
    """Start ``tensorboard --logdir logdir --port port`` in the background (see module doc)."""
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    server = TensorBoardServer(logdir=logdir)
    if importlib.util.find_spec("tensorboard") is None:
        server.reason = "tensorboard is not installed"
        return server
    chosen = free_port() if port == 0 else port
    if not port_is_free(chosen):
        server.reason = f"port {chosen} is in use (pick another with --tensorboard-port, 0 = any free port)"
        return server
    server.port = chosen
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL
    try:
        server.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--port", str(chosen), "--host", HOST,
             "--reload_interval", "5"],
            stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        server.reason = f"cannot start tensorboard ({exc})"
        server.port = None
        return server
    finally:
        if log_file:
            output.close()
    server.started_at = time.time()
    server._watcher = threading.Thread(target=server._watch, name="tensorboard-ready", daemon=True)
    server._watcher.start()
    return server
