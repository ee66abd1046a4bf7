"""Helpers shared by the search-API tests: a real uvicorn server on 127.0.0.1 and crafted uploads."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import httpx
from guards import guard

from kitaeru.serve.app import create_app
from kitaeru.serve.server import BackgroundServer

LIMIT = 10 * 1024 * 1024


@contextlib.contextmanager
def running_api(load_backend: Callable, **app_options) -> Iterator[httpx.Client]:
    """Start the app under uvicorn in a thread on a free localhost port, wait for /health, yield a
    client bound to it, shut the server down afterwards."""
    app = create_app(load_backend, **app_options)
    with BackgroundServer(app, host="127.0.0.1", port=0) as server:
        with httpx.Client(base_url=server.url, timeout=guard()) as client:
            assert client.get("/health").status_code == 200
            yield client


def chunked_multipart(total_bytes: int, chunk: int = 1024 * 1024) -> tuple[Iterator[bytes], dict[str, str]]:
    """A multipart body with one file part of ``total_bytes``, sent chunked (no Content-Length)."""
    boundary = "kitaeru-test-boundary"

    def body() -> Iterator[bytes]:
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
               "Content-Type: image/jpeg\r\n\r\n").encode()
        sent = 0
        while sent < total_bytes:
            n = min(chunk, total_bytes - sent)
            yield b"\xff" * n
            sent += n
        yield f"\r\n--{boundary}--\r\n".encode()

    return body(), {"content-type": f"multipart/form-data; boundary={boundary}"}
