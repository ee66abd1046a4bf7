"""Running the API under uvicorn: in the foreground (``kitaeru serve``) or in a background thread.

The listening socket is bound before uvicorn starts, so a busy port or a bad host is a one-line
error and ``port=0`` picks a free port whose number is known before the first request. A start-up
failure of the backend (a missing file, a bad model name) is reported as that one error, not as
uvicorn's traceback. Hostile clients are shed (:mod:`kitaeru.serve.connections`): a request must
arrive within ``READ_TIMEOUT_S``, connections beyond the descriptor budget get ``503``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

from kitaeru.core.errors import KitaeruError


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on connections of such sockets, and
    # without it every response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise KitaeruError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from exc
    sock.set_inheritable(True)
    return sock


class _QuietStartupFailure(logging.Filter):
    """Drop uvicorn's traceback of a backend start-up error that the caller reports itself."""

    def __init__(self, app: Any):
        super().__init__()
        self.app = app

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(self.app.state, "startup_error", None) is None


# A request (line, headers and body: at most ~10 MB) must have arrived this long after its first
# byte; a client still sending after that is dropped (a stalled or deliberately slow one).
READ_TIMEOUT_S = 30.0
# Idle seconds a kept-alive connection is held between requests (uvicorn's own timer).
KEEP_ALIVE_S = 5


def _make_server(app: Any, log_level: str, *, read_timeout: float = READ_TIMEOUT_S,
                 max_connections: int | None = None):
    import uvicorn

    from .connections import QuietResourceErrors, descriptor_budget, guarded_h11

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            # out-of-descriptor accept errors: one line a minute instead of a traceback per try
            asyncio.get_running_loop().set_exception_handler(QuietResourceErrors(logging.getLogger("uvicorn.error")))
            await super().startup(sockets=sockets)

    limit = max_connections if max_connections is not None else descriptor_budget()
    config = uvicorn.Config(app, lifespan="on", log_level=log_level, access_log=log_level == "debug",
                            timeout_graceful_shutdown=5, timeout_keep_alive=KEEP_ALIVE_S,
                            http=guarded_h11(read_timeout, limit), ws="none")
    return Server(config), _QuietStartupFailure(app)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _raise_startup_error(app: Any) -> None:
    error = getattr(app.state, "startup_error", None)
    if error is None:
        return
    if isinstance(error, KitaeruError):
        raise error
    raise KitaeruError(f"the search backend failed to start ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error


def run_server(app: Any, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info") -> None:
    """Serve ``app`` until Ctrl+C (a clean stop, not an error); raise the backend's start-up error, if any."""
    sock = bind_socket(host, port)
    app.state.url = _url(host, int(sock.getsockname()[1]))
    server, quiet = _make_server(app, log_level)
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addFilter(quiet)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn re-raises Ctrl+C after its graceful shutdown: stopping the server is not an error
        pass
    except SystemExit as exc:  # uvicorn exits this way when the application fails to start
        _raise_startup_error(app)
        raise KitaeruError(f"the search server failed to start (exit status {exc.code})") from None
    finally:
        uvicorn_log.removeFilter(quiet)
        sock.close()
    _raise_startup_error(app)


class BackgroundServer:
    """The API served by uvicorn in a daemon thread (for notebooks, tests and benchmarks)::

        with BackgroundServer(app) as server:
            httpx.get(server.url + "/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning",
                 startup_timeout: float = 300.0, read_timeout: float = READ_TIMEOUT_S,
                 max_connections: int | None = None):
        self.app = app
        self.host = host
        self.startup_timeout = startup_timeout
        self._sock = bind_socket(host, port)
        self.port = int(self._sock.getsockname()[1])
        self._server, self._quiet = _make_server(app, log_level, read_timeout=read_timeout,
                                                 max_connections=max_connections)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"kitaeru-serve-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return _url(self.host, self.port)

    def start(self) -> "BackgroundServer":
        """Start and wait until the backend is loaded and the socket accepts requests."""
        logging.getLogger("uvicorn.error").addFilter(self._quiet)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                self.stop()
                _raise_startup_error(self.app)
                raise KitaeruError("the search server stopped during start-up")
            if time.monotonic() > deadline:
                self.stop()
                raise KitaeruError(f"the search server did not start within {self.startup_timeout:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Ask uvicorn to finish (graceful shutdown) and wait for the thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self._sock.close()
        logging.getLogger("uvicorn.error").removeFilter(self._quiet)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
