"""Run ``streamlit run kitaeru/ui/app.py`` as a subprocess and print its URL once it answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kitaeru.core.console import info, warn
from kitaeru.core import net
from kitaeru.core.errors import ConfigError, KitaeruError
from kitaeru.serve.limits import MAX_UPLOAD_BYTES

from .config import LOCAL_HOSTS, UiConfig


def free_port(host: str) -> int:
    return net.free_port(host)


def port_taken(host: str, port: int) -> bool:
    return not net.port_is_free(host, port)


def streamlit_command(config: UiConfig, port: int) -> list[str]:
    import kitaeru.ui

    app = Path(kitaeru.ui.__file__).with_name("app.py")
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", config.host, "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--server.runOnSave", "false", "--browser.gatherUsageStats", "false",
        "--global.developmentMode", "false", "--client.toolbarMode", "minimal", "--theme.base", "light",
        # Search uploads: the API's byte limit (MB) here too; their pixels are checked before decoding.
        "--server.maxUploadSize", str(max(1, MAX_UPLOAD_BYTES // (1024 * 1024))),
    ]


def wait_until_answering(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host
    while time.time() < deadline:
        if proc.poll() is not None:
            raise KitaeruError(f"streamlit exited with code {proc.returncode} before answering (see its messages above)")
        try:
            with socket.create_connection((target, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise KitaeruError(f"streamlit did not answer on {host}:{port} within {timeout:.0f} s")


def serve_dashboard(config: UiConfig) -> dict[str, Any]:
    if config.host not in LOCAL_HOSTS:
        warn(f"--host {config.host}: the dashboard (which can start and stop trainings) is reachable from other "
             "machines; it has no authentication")
    port = config.port or free_port(config.host)
    if port_taken(config.host, port):
        raise ConfigError(f"--port {port}: already in use on {config.host} (choose another, or --port 0 for any free one)")
    roots = [os.path.realpath(p) for p in config.runs]
    env = {**os.environ, "KITAERU_UI_RUNS": os.pathsep.join(roots), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    started = time.time()
    # Streamlit's own messages go to stderr: stdout carries only the URL (and --json's result).
    try:
        err = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stderr (tests): Streamlit inherits ours
        err = None
    proc = subprocess.Popen(streamlit_command(config, port), env=env, stdout=err, stderr=err)
    previous = _sigterm_stops_too()
    shown = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{shown}:{port}"
    try:
        wait_until_answering(config.host, port, proc, config.ready_timeout)
        print(f"kitaeru ui: {url}  (runs: {', '.join(roots)}; started in {time.time() - started:.1f} s; Ctrl-C stops it)",
              flush=True)
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C is how a dashboard ends: stop Streamlit, exit normally
        _stop(proc)
        code = proc.returncode
    except BaseException:
        _stop(proc)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return {"url": url, "runs": roots, "exit_code": code}


def _sigterm_stops_too():
    """``kill`` (SIGTERM) ends the dashboard as Ctrl-C does, so Streamlit is never left behind."""
    import threading

    if threading.current_thread() is threading.main_thread():
        def _raise(signum, frame):  # noqa: ARG001 - signal handler signature
            raise KeyboardInterrupt

        return signal.signal(signal.SIGTERM, _raise)
    return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    info("dashboard stopped")
