"""A TensorBoard server over a run's ``tensorboard/`` folder while the run trains, started on demand.

It never holds training up, nor takes CPU from it while nobody looks: the run binds the port at
once (so the URL printed at the start is valid from the first second), and the TensorBoard process
itself — a second of CPU for its imports, then a reload every few seconds — is started only when
the first request arrives; requests are then relayed to it by small threads. A TensorBoard already
answering on the requested port (a server of an earlier run, or your own ``tensorboard --logdir
runs``) is reused instead of started again; any other program on the port means no server, and the
run goes on and says why. What this command started stops with the command (``tensorboard --logdir
<run>/tensorboard`` shows a finished run).
"""

from __future__ import annotations

import importlib.util
import json
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

from kitaeru.core import net

HOST = "127.0.0.1"
BACKEND_START_SECONDS = 120  # how long a request waits for TensorBoard to come up
PROBE_SECONDS = 30  # how long a new run waits for whatever holds its port to say it is a TensorBoard


def port_is_free(port: int, host: str = HOST) -> bool:
    return net.port_is_free(host, port)


def free_port(host: str = HOST) -> int:
    return net.free_port(host)


@dataclass
class TensorBoardServer:
    """A listening (or reused, or refused) server and what is known about it."""

    logdir: Path
    port: int | None = None
    process: subprocess.Popen | None = None  # the TensorBoard behind the port, once someone asked
    reason: str | None = None  # why there is no server
    ready_after_seconds: float | None = None  # from the first request to TensorBoard's first answer
    started_at: float = field(default_factory=time.time)
    reused: bool = False  # an already running TensorBoard answered on the port
    serving: str | None = None  # the logdir a reused server reports
    log_file: Path | None = None
    _listener: socket.socket | None = None
    _backend_port: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: bool = False

    @property
    def url(self) -> str | None:
        return f"http://localhost:{self.port}/" if self.port is not None and self.reason is None else None

    # ---- on demand ---------------------------------------------------------------------------
    def _listen(self, sock: socket.socket) -> None:
        self._listener = sock
        threading.Thread(target=self._accept_loop, name="tensorboard-listener", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed: stop() was called
            threading.Thread(target=self._relay, args=(client,), name="tensorboard-relay", daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = None
        try:
            port = self._backend()
            if port is None:
                return
            upstream = socket.create_connection((HOST, port), timeout=10)
            upstream.settimeout(None)
            client.settimeout(None)
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join()
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    sock.close()

    def _backend(self) -> int | None:
        """The port of the TensorBoard process, started by the first request (None if it cannot start)."""
        with self._lock:
            if self._stopping:
                return None
            if self.process is None:
                self._backend_port = free_port()
                output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
                try:
                    self.process = subprocess.Popen(
                        [sys.executable, "-m", "tensorboard.main", "--logdir", str(self.logdir),
                         "--port", str(self._backend_port), "--host", HOST, "--reload_interval", "5"],
                        stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    )
                except OSError as exc:
                    self.reason = f"cannot start tensorboard ({exc})"
                    return None
                finally:
                    if self.log_file:
                        output.close()
                self.started_at = time.time()
            if self.ready_after_seconds is None and not self._wait_for_backend():
                return None
            return self._backend_port

    def _wait_for_backend(self) -> bool:
        deadline = self.started_at + BACKEND_START_SECONDS
        while time.time() < deadline and self.process.poll() is None and not self._stopping:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self._backend_port}/", timeout=1) as response:
                    if response.status == 200:
                        self.ready_after_seconds = round(time.time() - self.started_at, 2)
                        return True
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        return False

    # ---- life ---------------------------------------------------------------------------------
    def wait_ready(self, timeout: float) -> bool:  # noqa: ARG002 - kept for callers that poll
        """Whether the URL answers requests (at once: the port is bound, or a running server is reused)."""
        return self.url is not None

    def stop(self, *, wait: bool = True) -> None:
        """Stop what this command started (a reused server is left running). ``wait=False``: send
        the signal and let a background thread reap the process, so the run ends at once."""
        self._stopping = True
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        with self._lock:  # a request starting TensorBoard right now finishes that first
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        if wait:
            _reap(process)
        else:
            threading.Thread(target=_reap, args=(process,), name="tensorboard-stop", daemon=True).start()

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "port": self.port,
            "logdir": str(self.logdir),
            "pid": self.process.pid if self.process is not None else None,
            "started_on_first_request": not self.reused and self.url is not None,
            "answered_after_seconds": self.ready_after_seconds,
            "reused": self.reused,
            "serving": self.serving,
            "not_started_because": self.reason,
        }


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes until ``source`` ends, then end ``target``'s sending side."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _reap(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def running_tensorboard(port: int, host: str = HOST) -> str | None:
    """The logdir of a TensorBoard answering on ``port`` (``""`` if it does not say), or None when
    nothing there is a TensorBoard."""
    try:
        # Long enough for a server of another run, which starts TensorBoard on this first request.
        with urllib.request.urlopen(f"http://{host}:{port}/data/environment", timeout=PROBE_SECONDS) as response:
            data = json.loads(response.read().decode("utf-8", errors="replace"))
    except Exception:  # noqa: BLE001 - refused, reset, not HTTP, not JSON: not a TensorBoard
        return None
    if not isinstance(data, dict) or not ({"data_location", "window_title"} & set(data)):
        return None
    return str(data.get("data_location") or "")


def start_tensorboard(logdir: str | Path, port: int, log_file: str | Path | None = None) -> TensorBoardServer:
    """A TensorBoard URL for ``logdir`` on ``port`` (0 = any free port), at once (see module doc)."""
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    server = TensorBoardServer(logdir=logdir, log_file=Path(log_file) if log_file else None)
    if importlib.util.find_spec("tensorboard") is None:
        server.reason = "tensorboard is not installed"
        return server
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen(16)
    except OSError:
        sock.close()
        serving = running_tensorboard(port) if port else None
        if serving is None:
            server.reason = f"port {port} is in use (pick another with --tensorboard-port, 0 = any free port)"
        else:
            server.port, server.reused, server.serving = port, True, serving
        return server
    server.port = int(sock.getsockname()[1])
    server._listen(sock)
    return server
