"""Signal handling installed explicitly when a command starts.

A process started from a non-interactive parent (``nohup … &``, cron, a job runner, the dashboard)
may inherit SIGINT as *ignored*: POSIX shells ignore it for background jobs, and an ignored signal
stays ignored across ``exec``. Python then never installs its Ctrl-C handler, so a Stop button or
``kill -INT`` does nothing. Every command therefore sets its handlers itself: SIGINT raises
``KeyboardInterrupt`` (exit 130, run ``interrupted``), and so does SIGTERM (a scheduler's stop),
which would otherwise end the process at once without its evidence.
"""

from __future__ import annotations

import signal
import threading


def _terminate_as_interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def install_interrupt_handlers() -> None:
    """SIGINT and SIGTERM both raise ``KeyboardInterrupt`` in the main thread, whatever the parent set."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
