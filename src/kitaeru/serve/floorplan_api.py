"""The floor-plan generation endpoint: ``POST /api/generate-floor-plan`` and the images it wrote.

``floorplan_router(generate_fn, image_dir)`` is a FastAPI ``APIRouter`` that ``kitaeru serve --lora``
mounts next to the search API. ``generate_fn(width, height, steps, seed)`` returns a PIL image (the
server builds it with :func:`kitaeru.models.diffusion.generate_floor_plan`). The router bounds what
a request may ask (1..``max_cells`` grid cells, 1..``max_steps`` steps: 422 outside), runs one
generation at a time (429 while busy: a GPU holds one SD pipeline), writes each image atomically
under a random name and serves it back from ``GET {image_route}/{name}`` only (no other file).
"""


import os
import re
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

GenerateFn = Callable[[int, int, int, int], Any]
IMAGE_NAME = re.compile(r"^[0-9a-f]{32}\.png$")


def floorplan_router(generate_fn: GenerateFn, image_dir: str | os.PathLike, *, max_cells: int = 50,
                     max_steps: int = 100, default_steps: int = 30, default_seed: Optional[int] = None,
                     image_route: str = "/api/floor-plans"):
    """The router; ``default_seed`` None = a fresh random seed per request (returned in the answer)."""
    from fastapi import APIRouter, HTTPException
    from fastapi.responses import FileResponse
    from pydantic import BaseModel, Field, create_model

    image_dir = Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    Request: type[BaseModel] = create_model(
        "FloorPlanRequest",
        width=(int, Field(..., ge=1, le=max_cells, description="Plan width in grid cells.")),
        height=(int, Field(..., ge=1, le=max_cells, description="Plan height in grid cells.")),
        steps=(int, Field(default_steps, ge=1, le=max_steps, description="Denoising steps.")),
        seed=(Optional[int], Field(default_seed, ge=0, le=2**32 - 1, description="Seed (random when not given).")),
    )

    class Answer(BaseModel):
        imageUrl: str
        width: int
        height: int
        steps: int
        seed: int

    router = APIRouter()
    # the same one-line error body as the search API (kitaeru.serve.app.ErrorBody)
    error = {"content": {"application/json": {"schema": {
        "type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]}}}}

    # A plain ``def``: FastAPI runs it in its thread pool, so a long generation never blocks the
    # event loop, and the lock below is what keeps a second request from starting a second one.
    @router.post("/api/generate-floor-plan", response_model=Answer, responses={
        422: {"description": "Invalid parameter", **error}, 429: {"description": "Busy generating", **error}})
    def generate_floor_plan(request: Request) -> Answer:  # type: ignore[valid-type]
        if not lock.acquire(blocking=False):
            raise HTTPException(status_code=429, detail="a floor plan is being generated; try again shortly")
        try:
            seed = request.seed if request.seed is not None else int.from_bytes(os.urandom(4), "little")
            image = generate_fn(request.width, request.height, request.steps, seed)
            if isinstance(image, (list, tuple)):
                image = image[0]
            if isinstance(image, dict):
                image = image["image"]
            name = f"{uuid.uuid4().hex}.png"
            tmp = image_dir / f".{name}.tmp.png"
            image.save(tmp)
            os.replace(tmp, image_dir / name)
        finally:
            lock.release()
        return Answer(imageUrl=f"{image_route}/{name}", width=request.width, height=request.height,
                      steps=request.steps, seed=seed)

    @router.get(image_route + "/{name}", responses={
        200: {"description": "The floor plan", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
        404: {"description": "Not found", **error}, 422: {"description": "Invalid parameter", **error}})
    def floor_plan_image(name: str):
        if not IMAGE_NAME.match(name) or not (image_dir / name).is_file():
            raise HTTPException(status_code=404, detail="no such floor plan")
        return FileResponse(image_dir / name, media_type="image/png")

    router.busy = lock.locked  # type: ignore[attr-defined] - for health endpoints and tests
    return router


def pipeline_generate_fn(pipe: Any, *, guidance: float = 7.5, prompt: Optional[str] = None,
                         negative_prompt: Optional[str] = None) -> GenerateFn:
    """``generate_fn`` for :func:`floorplan_router` from a loaded diffusers pipeline."""
    from kitaeru.models.diffusion import generate_floor_plan

    def generate(width: int, height: int, steps: int, seed: int):
        return generate_floor_plan(pipe, width, height, steps=steps, guidance=guidance, seed=seed, num_images=1,
                                   prompt=prompt, negative_prompt=negative_prompt)[0]["image"]

    return generate
