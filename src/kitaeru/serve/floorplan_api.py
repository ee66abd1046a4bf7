"""The floor-plan generation endpoint: ``POST /api/generate-floor-plan`` and the images it wrote.

``floorplan_router(generate_fn, image_dir)`` is a FastAPI ``APIRouter`` that ``kitaeru serve --lora``
mounts next to the search API. ``generate_fn(width, height, steps, seed)`` returns a PIL image (the
server builds it with :func:`kitaeru.models.diffusion.generate_floor_plan`). The router bounds what
a request may ask (1..``max_cells`` grid cells, 1..``max_steps`` steps: 422 outside), runs one
generation at a time (429 while busy: a GPU holds one SD pipeline) and cancels it when its client
disconnects, writes each image atomically under a random name, serves it back from
``GET {image_route}/{name}`` only (no other file) and deletes it after an hour (or beyond the 200 newest).
"""


import asyncio
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

GenerateFn = Callable[[int, int, int, int], Any]
IMAGE_NAME = re.compile(r"^[0-9a-f]{32}\.png$")
# Generated plans are kept this long and at most this many (newest first): a client fetches its
# image right after the answer, and a long-running server must not fill its disk.
IMAGE_TTL_S = 3600.0
MAX_IMAGES = 200
# How often a running generation checks whether its client is still connected.
DISCONNECT_POLL_S = 0.25

# The cancel flag of the generation running in this worker thread (read by the pipeline's per-step
# callback, see pipeline_generate_fn): a thread-local keeps generate_fn's four-argument signature.
_running = threading.local()


class GenerationCancelled(Exception):
    """Raised inside the pipeline at the next step once the client has gone."""


def cancel_requested() -> bool:
    """True when the client of the generation running in this thread has disconnected."""
    event = getattr(_running, "cancelled", None)
    return event is not None and event.is_set()


def prune_images(image_dir: Path, *, ttl_s: float = IMAGE_TTL_S, keep: int = MAX_IMAGES) -> int:
    """Delete generated plans older than ``ttl_s`` or beyond the ``keep`` newest; returns how many."""
    now = time.time()
    found = []
    for path in image_dir.iterdir():
        if IMAGE_NAME.match(path.name) or (path.name.startswith(".") and path.name.endswith(".tmp.png")):
            try:
                found.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # removed by a concurrent prune
                continue
    found.sort(reverse=True)
    removed = 0
    for rank, (mtime, path) in enumerate(found):
        stale_tmp = path.name.startswith(".") and now - mtime > ttl_s
        if stale_tmp or (not path.name.startswith(".") and (rank >= keep or now - mtime > ttl_s)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def floorplan_router(generate_fn: GenerateFn, image_dir: str | os.PathLike, *, max_cells: int = 50,
                     max_steps: int = 100, default_steps: int = 30, default_seed: Optional[int] = None,
                     image_route: str = "/api/floor-plans", image_ttl_s: float = IMAGE_TTL_S,
                     max_images: int = MAX_IMAGES):
    """The router; ``default_seed`` None = a fresh random seed per request (returned in the answer).
    A generation whose client disconnects is cancelled (the lock is free for the next request);
    images expire after ``image_ttl_s`` seconds and beyond the ``max_images`` newest."""
    from fastapi import APIRouter, HTTPException, Request as HttpRequest
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse

    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    prune_images(image_dir, ttl_s=image_ttl_s, keep=max_images)
    lock = threading.Lock()
    # a request without steps never gets more than the server allows
    Request = _request_model(max_cells, max_steps, min(default_steps, max_steps), default_seed)
    Answer = _answer_model()
    router = APIRouter()

    def generate_and_save(request: Any, seed: int, cancelled: threading.Event) -> str:
        """In a worker thread: generate, write the PNG atomically, expire old ones; the file name."""
        _running.cancelled = cancelled
        try:
            image = generate_fn(request.width, request.height, request.steps, seed)
        finally:
            _running.cancelled = None
        return _save_image(image, image_dir, ttl_s=image_ttl_s, keep=max_images)

    # ``async`` so it can watch the connection while the generation runs in the thread pool; the lock
    # keeps a second request from starting a second generation, and is released only once the
    # worker has really stopped (a GPU holds one pipeline).
    @router.post("/api/generate-floor-plan", response_model=Answer, responses={
        422: {"description": "Invalid parameter", **_ERROR}, 429: {"description": "Busy generating", **_ERROR},
        499: {"description": "Client went away (generation cancelled)", **_ERROR}})
    async def generate_floor_plan(request: Request, http: HttpRequest) -> Answer:  # type: ignore[valid-type]
        if not lock.acquire(blocking=False):
            raise HTTPException(status_code=429, detail="a floor plan is being generated; try again shortly")
        cancelled = threading.Event()
        try:
            seed = request.seed if request.seed is not None else int.from_bytes(os.urandom(4), "little")
            work = asyncio.ensure_future(run_in_threadpool(generate_and_save, request, seed, cancelled))
            await _wait_or_cancel(work, http, cancelled)
            try:
                name = work.result()
            except GenerationCancelled:
                raise HTTPException(status_code=499, detail="the client disconnected; generation cancelled") from None
        finally:
            lock.release()
        return Answer(imageUrl=f"{image_route}/{name}", width=request.width, height=request.height,
                      steps=request.steps, seed=seed)

    @router.get(image_route + "/{name}", responses={
        200: {"description": "The floor plan", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        404: {"description": "Not found", **_ERROR}, 422: {"description": "Invalid parameter", **_ERROR}})
    def floor_plan_image(name: str):
        if not IMAGE_NAME.match(name) or not (image_dir / name).is_file():
            raise HTTPException(status_code=404, detail="no such floor plan")
        return FileResponse(image_dir / name, media_type="image/png")

    router.busy = lock.locked  # type: ignore[attr-defined] - for health endpoints and tests
    return router


# the same one-line error body as the search API (kitaeru.serve.app.ErrorBody)
_ERROR = {"content": {"application/json": {"schema": {
    "type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}}}}


def _request_model(max_cells: int, max_steps: int, default_steps: int, default_seed: Optional[int]):
    """The request body, bounded by the server's limits (out of bounds: 422)."""
    from pydantic import Field, create_model

    # strict: JSON ``true`` or ``2.0`` is not a cell count (the schema says integer)
    return create_model(
        "FloorPlanRequest",
        width=(int, Field(..., ge=1, le=max_cells, strict=True, description="Plan width in grid cells.")),
        height=(int, Field(..., ge=1, le=max_cells, strict=True, description="Plan height in grid cells.")),
        steps=(int, Field(default_steps, ge=1, le=max_steps, strict=True, description="Denoising steps.")),
        seed=(Optional[int], Field(default_seed, ge=0, le=2**32 - 1, strict=True,
                                   description="Seed (random when not given).")),
    )


def _answer_model():
    from pydantic import BaseModel

    class Answer(BaseModel):
        imageUrl: str
        width: int
        height: int
        steps: int
        seed: int

    return Answer


def _save_image(image: Any, image_dir: Path, *, ttl_s: float, keep: int) -> str:
    """Write what ``generate_fn`` returned as a PNG under a random name, atomically; expire old ones."""
    if isinstance(image, (list, tuple)):
        image = image[0]
    if isinstance(image, dict):
        image = image["image"]
    name = f"{uuid.uuid4().hex}.png"
    tmp = image_dir / f".{name}.tmp.png"
    try:
        image.save(tmp)
        os.replace(tmp, image_dir / name)
    finally:
        tmp.unlink(missing_ok=True)
    prune_images(image_dir, ttl_s=ttl_s, keep=keep)
    return name


async def _wait_or_cancel(work: "asyncio.Future", http: Any, cancelled: threading.Event) -> None:
    """Wait for ``work``; once the client has gone, set ``cancelled`` (the pipeline stops at its next
    step) and still wait for the worker to really stop."""
    while not work.done():
        await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
        if not work.done() and not cancelled.is_set() and await http.is_disconnected():
            cancelled.set()


def pipeline_generate_fn(pipe: Any, *, guidance: float = 7.5, prompt: Optional[str] = None,
                         negative_prompt: Optional[str] = None) -> GenerateFn:
    """``generate_fn`` for :func:`floorplan_router` from a loaded diffusers pipeline."""
    from kitaeru.models.diffusion import generate_floor_plan

    def stop_when_cancelled(pipeline: Any, step: int, timestep: Any, tensors: dict) -> dict:
        # diffusers calls this after every denoising step: the one place a running generation can stop
        if cancel_requested():
            raise GenerationCancelled
        return tensors

    class Cancellable:
        """``pipe`` with the per-step check added to every call (generate_floor_plan calls it once)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(pipe, name)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return pipe(*args, callback_on_step_end=stop_when_cancelled, **kwargs)

    def generate(width: int, height: int, steps: int, seed: int):
        return generate_floor_plan(Cancellable(), width, height, steps=steps, guidance=guidance, seed=seed,
                                   num_images=1, prompt=prompt, negative_prompt=negative_prompt)[0]["image"]

    return generate
