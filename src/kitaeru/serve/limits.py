"""Request-size bounds enforced while the body streams in, before anything is buffered.

Starlette parses a multipart upload only after the whole body has arrived (spooling files over
1 MB to disk), so a size check in the endpoint would come too late to protect the server. This ASGI
middleware refuses a body whose ``Content-Length`` is already too big without reading it, and
counts the bytes of bodies sent without one (chunked transfer), answering ``413`` the moment the
limit is crossed.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, MutableMapping

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Room for the multipart boundaries, part headers and the small form fields around the file.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# After refusing a body, up to this much more is read and thrown away so the client, still busy
# sending, gets the 413 instead of a connection reset; beyond it the connection is simply closed.
DRAIN_BYTES = 32 * 1024 * 1024


class BodyTooLarge(Exception):
    """Raised from ``receive`` when the body grows past the limit; turned into a 413 response."""


class BodySizeLimit:
    """Answer ``413`` to any request whose body exceeds ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, detail: str | None = None):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.detail = detail or f"request body is larger than {self.max_body_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            if declared - self.max_body_bytes <= DRAIN_BYTES:
                await _drain(receive, declared)
            await self._reject(send)
            return

        received = 0
        exceeded = False
        response_started = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started, replaced
            if replaced:
                return
            if exceeded and not response_started and message["type"] == "http.response.start":
                # The framework may have turned our exception into its own error response
                # (e.g. "error parsing the body"): the real reason is the size, so say that.
                response_started = replaced = True
                await _drain(receive, DRAIN_BYTES)
                await self._reject(send)
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if response_started:
                raise
            response_started = True
            await _drain(receive, DRAIN_BYTES)
            await self._reject(send)

    async def _reject(self, send: Send) -> None:
        body = json.dumps({"detail": self.detail}).encode()
        await send({
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        })
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, limit: int) -> None:
    """Read and discard the rest of the body, at most ``limit`` bytes (nothing is kept)."""
    drained = 0
    while drained <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
