"""Shedding hostile clients: a deadline for reading each request, a bound on open connections, and
one quiet line (not a traceback per accept) when the process runs out of file descriptors.

uvicorn's own ``timeout_keep_alive`` only closes connections that sit idle *between* requests: a
client that sends half a request line (or headers, or a body) and then nothing keeps its socket for
ever, and a thousand of them exhaust the descriptors so no one else gets in. :func:`guarded_h11`
makes uvicorn's HTTP/1.1 protocol (h11) close a connection whose request has not fully arrived within
``read_timeout`` seconds of its first byte (or of the connection), and answer ``503`` + close to
connections beyond ``max_connections``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from typing import Any

# Errors of accept() that mean "out of descriptors/memory": asyncio logs each with a traceback and
# pauses accepting for a second; the first one a minute is enough for the operator.
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_BUSY_BODY = b'{"detail":"too many open connections; try again shortly"}'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
         b"retry-after: 1\r\ncontent-length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


def guarded_h11(read_timeout: float, max_connections: int) -> type:
    """uvicorn's h11 protocol class with a request-read deadline and a connection bound."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    received = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)

    class GuardedH11Protocol(H11Protocol):
        _read_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(_BUSY)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._read_deadline is None and self.conn.their_state is h11.IDLE:
                self._arm()  # the first byte of a next request on a kept-alive connection
            super().data_received(data)
            if self.conn.their_state in received:
                self._disarm()  # the whole request is in: answering it may take as long as it takes

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._read_deadline = self.loop.call_later(read_timeout, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _read_timed_out(self) -> None:
            self._read_deadline = None
            if self.conn.their_state not in received and not self.transport.is_closing():
                # a request still arriving after the deadline: a slow or stalled client, dropped
                # (the app, if it was waiting for the body, sees a disconnect)
                self.transport.close()

    return GuardedH11Protocol


class QuietResourceErrors:
    """An event-loop exception handler: out-of-descriptor accept errors as one log line a minute,
    everything else to the loop's default handler (unchanged)."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0):
        self.logger = logger
        self.every_s = every_s
        self._last = -float("inf")
        self.suppressed = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            now = time.monotonic()
            if now - self._last >= self.every_s:
                more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
                self.logger.warning(f"cannot accept connections: {exc.strerror or exc}{more}; "
                                    "new clients wait until others finish")
                self._last, self.suppressed = now, 0
            else:
                self.suppressed += 1
            return
        loop.default_exception_handler(context)


def descriptor_budget(default: int = 1000) -> int:
    """How many connections to allow: below the process's open-file limit (raised to its hard limit
    first), leaving room for the model, index and log files."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
            if wanted > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
                soft = wanted
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: keep what there is
        return default
    return max(16, min(default, soft - 128))
