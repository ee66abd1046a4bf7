"""``kitaeru serve`` against hostile clients: partial requests are dropped, connections are bounded,
``/health`` answers while every search worker is busy, out-of-descriptor errors are one quiet line,
a floor-plan generation stops when its client leaves and its images expire, ``/docs`` works offline,
and the API refuses what its schema excludes (strict integers, an empty ``search_in``)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from guards import guard, wait_until
from kitaeru.serve.app import create_app
from kitaeru.serve.backend import SearchBackend, UnsupportedQuery
from kitaeru.serve.safe_files import ImageRoot
from kitaeru.serve.server import BackgroundServer


class BlockingBackend(SearchBackend):
    """A backend whose text searches wait until ``release`` is set (a slow model under load)."""

    kind = "index"
    search_targets = ("images", "captions")

    def __init__(self):
        super().__init__(ImageRoot(None))
        self.release = threading.Event()
        self.waiting = 0
        self._count = threading.Lock()

    def __len__(self) -> int:
        return 3

    @property
    def supports_text(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {"model": "test"}

    def search_text(self, query: str, top_k: int, target: str) -> list[dict[str, Any]]:
        with self._count:
            self.waiting += 1
        self.release.wait(guard())
        return [{"id": "0", "score": 1.0, "target": target}]

    def search_image(self, image, top_k: int, target: str) -> list[dict[str, Any]]:
        raise UnsupportedQuery("no images here")

    def stored_image_path(self, item_id: str) -> str:
        raise KeyError(item_id)


@pytest.fixture
def backend():
    b = BlockingBackend()
    b.release.set()
    yield b
    b.release.set()


def _server(backend, **options) -> BackgroundServer:
    return BackgroundServer(create_app(lambda: backend), **options)


def _closed_by_server(sock: socket.socket) -> bytes:
    """What the server sends before it closes the connection (b"" if only the close); fails on a hang."""
    sock.settimeout(guard())
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


# ---- slow and partial clients ------------------------------------------------------------------
def test_a_partial_request_is_dropped_after_the_read_deadline(backend):
    with _server(backend, read_timeout=0.5) as server:
        partial = socket.create_connection(("127.0.0.1", server.port))
        partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        silent = socket.create_connection(("127.0.0.1", server.port))  # sends nothing at all
        assert _closed_by_server(partial) == b""
        assert _closed_by_server(silent) == b""
        # a client that does send its request in time is answered as usual
        assert httpx.get(server.url + "/health", timeout=guard()).status_code == 200


def test_a_request_body_that_stalls_is_dropped(backend):
    with _server(backend, read_timeout=0.5) as server:
        slow = socket.create_connection(("127.0.0.1", server.port))
        slow.sendall(b"POST /text HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 100\r\n\r\nquery=a")  # 93 bytes of body never come
        assert b" 200 " not in _closed_by_server(slow)


def test_connections_beyond_the_limit_get_503_and_the_server_recovers(backend):
    with _server(backend, max_connections=4) as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
        wait_until(lambda: len(server._server.server_state.connections) == 4, "the server saw 4 connections")
        extra = socket.create_connection(("127.0.0.1", server.port))
        answer = _closed_by_server(extra)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"too many open connections" in answer
        for sock in held:
            sock.close()
        wait_until(lambda: not server._server.server_state.connections, "the held connections were closed")
        assert httpx.get(server.url + "/health", timeout=guard()).status_code == 200


def test_health_answers_while_every_search_worker_is_busy(backend):
    """More blocked searches than the thread pool has workers (40): /health still answers at once."""
    backend.release.clear()
    with _server(backend) as server, ThreadPoolExecutor(60) as pool:
        searches = [pool.submit(httpx.post, server.url + "/text", data={"query": "rain"}, timeout=guard())
                    for _ in range(60)]
        wait_until(lambda: backend.waiting >= 40, "the search workers were all busy")
        health = httpx.get(server.url + "/health", timeout=guard())
        assert health.status_code == 200 and health.json()["items"] == 3
        assert not any(s.done() for s in searches)  # answered while all searches were still held
        backend.release.set()
        assert all(s.result().status_code == 200 for s in searches)


def test_out_of_descriptor_errors_are_one_line_not_a_traceback_each(caplog):
    from kitaeru.serve.connections import QuietResourceErrors

    handler = QuietResourceErrors(logging.getLogger("kitaeru-test"))
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="kitaeru-test"):
            for _ in range(50):
                handler(loop, {"message": "socket.accept() out of system resource",
                               "exception": OSError(errno.EMFILE, os.strerror(errno.EMFILE))})
    finally:
        loop.close()
    lines = [r for r in caplog.records if r.name == "kitaeru-test"]
    assert len(lines) == 1 and "Too many open files" in lines[0].getMessage() and lines[0].exc_info is None
    assert handler.suppressed == 49


# ---- the schema's word is the server's word ----------------------------------------------------
def test_text_refuses_an_empty_search_in_and_image_schema_requires_bytes(backend):
    with _server(backend) as server, httpx.Client(base_url=server.url, timeout=guard()) as client:
        assert client.post("/text", data={"query": "a", "search_in": ""}).status_code == 422
        assert client.post("/text", data={"query": "a", "search_in": "captions"}).json()["search_in"] == "captions"
        assert client.post("/text", data={"query": "a"}).json()["search_in"] == "images"
        empty = client.post("/image", files={"file": ("a.png", b"", "image/png")})
        assert empty.status_code == 400 and "empty upload" in empty.json()["detail"]
        schema = client.get("/openapi.json").json()["components"]["schemas"]
        upload = next(s for s in schema.values() if "file" in s.get("properties", {}))["properties"]["file"]
        assert upload["minLength"] == 1  # so an empty upload is not a request the schema allows


# ---- offline /docs -----------------------------------------------------------------------------
def test_docs_page_uses_only_local_assets(backend):
    with _server(backend) as server, httpx.Client(base_url=server.url, timeout=guard()) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert not re.search(r"https?://", page.text), "the page must not load anything from the network"
        assets = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
        assert {a.rsplit("/", 1)[-1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        for asset in assets:
            answer = client.get(asset)
            assert answer.status_code == 200 and len(answer.content) > 1000, asset
        assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
        assert client.get("/docs/assets/swagger-ui-bundle.js", params={"path": "/etc/passwd"}).text.startswith("/*")
        assert client.get("/docs/assets/index.html").status_code == 404  # only the three files
        assert client.get("/redoc").status_code == 404  # ReDoc loads from a CDN: not offered


# ---- floor-plan generation ---------------------------------------------------------------------
def _floorplan_app(generate, image_dir, **options):
    from fastapi import FastAPI

    from kitaeru.serve.floorplan_api import floorplan_router

    router = floorplan_router(generate, image_dir, max_cells=50, max_steps=50, default_steps=2, **options)
    app = FastAPI()
    app.include_router(router)
    return app, router


def _tiny_image():
    from PIL import Image

    return Image.new("RGB", (8, 8), "white")


def test_floor_plan_refuses_booleans_and_floats_as_integers(tmp_path):
    from fastapi.testclient import TestClient

    app, _ = _floorplan_app(lambda w, h, s, seed: _tiny_image(), tmp_path / "plans")
    client = TestClient(app)
    for bad in ({"width": True, "height": 2}, {"width": 2, "height": 2.0}, {"width": 2, "height": 2, "steps": False},
                {"width": 2, "height": 2, "seed": True}):
        assert client.post("/api/generate-floor-plan", json=bad).status_code == 422, bad
    assert client.post("/api/generate-floor-plan", json={"width": 2, "height": 2}).status_code == 200


def test_a_generation_stops_when_its_client_disconnects(tmp_path):
    """The generation polls the cancel flag as the pipeline's per-step callback does; once the client
    has gone the lock is free again and the next request is served."""
    from kitaeru.serve.floorplan_api import GenerationCancelled, cancel_requested

    steps_run = []

    def generate(width, height, steps, seed):
        if seed == 1:  # the long one
            for step in range(100_000):
                if cancel_requested():
                    raise GenerationCancelled
                steps_run.append(step)
                time.sleep(0.01)
        return _tiny_image()

    app, router = _floorplan_app(generate, tmp_path / "plans")
    with BackgroundServer(app) as server:
        body = b'{"width": 50, "height": 50, "seed": 1}'
        leaving = socket.create_connection(("127.0.0.1", server.port))
        leaving.sendall(b"POST /api/generate-floor-plan HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        wait_until(lambda: len(steps_run) > 3, "the generation was running")
        assert httpx.post(server.url + "/api/generate-floor-plan", json={"width": 1, "height": 1, "seed": 2},
                          timeout=guard()).status_code == 429
        leaving.close()
        wait_until(lambda: not router.busy(), "the cancelled generation released the lock")
        assert len(steps_run) < 100_000
        again = httpx.post(server.url + "/api/generate-floor-plan", json={"width": 1, "height": 1, "seed": 2},
                           timeout=guard())
        assert again.status_code == 200, again.text


def test_the_pipeline_wrapper_stops_at_the_next_step():
    """pipeline_generate_fn hands diffusers a per-step callback that raises once cancelled."""
    from kitaeru.serve import floorplan_api

    class FakePipe:
        def __init__(self):
            self.steps = 0

        def __call__(self, **kwargs):
            for step in range(kwargs["num_inference_steps"]):
                self.steps += 1
                kwargs["callback_on_step_end"](self, step, 0, {})

            class Out:
                images = [_tiny_image()]

            return Out()

    pipe = FakePipe()
    generate = floorplan_api.pipeline_generate_fn(pipe)
    assert generate(1, 1, 5, 0).size == (8, 8) and pipe.steps == 5
    cancelled = threading.Event()
    cancelled.set()
    floorplan_api._running.cancelled = cancelled
    try:
        with pytest.raises(floorplan_api.GenerationCancelled):
            generate(1, 1, 5, 0)
    finally:
        floorplan_api._running.cancelled = None
    assert pipe.steps == 6  # stopped after the first step of the second call


def test_generated_images_expire(tmp_path):
    from fastapi.testclient import TestClient

    from kitaeru.serve.floorplan_api import prune_images

    plans = tmp_path / "plans"
    plans.mkdir()
    old = plans / ("a" * 32 + ".png")
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    stray = plans / ".dead.tmp.png"
    stray.write_bytes(b"x")
    os.utime(stray, (time.time() - 7200, time.time() - 7200))
    unrelated = plans / "notes.txt"
    unrelated.write_text("kept")
    app, _ = _floorplan_app(lambda w, h, s, seed: _tiny_image(), plans, max_images=3)
    assert not old.exists() and not stray.exists() and unrelated.exists()  # expired at start-up
    client = TestClient(app)
    urls = [client.post("/api/generate-floor-plan", json={"width": 1, "height": 1}).json()["imageUrl"]
            for _ in range(5)]
    assert sorted(p.name for p in plans.glob("*.png")) == sorted(u.rsplit("/", 1)[-1] for u in urls[-3:])
    assert client.get(urls[0]).status_code == 404 and client.get(urls[-1]).status_code == 200
    assert prune_images(plans, ttl_s=0.0) == 3 and not list(plans.glob("*.png"))
