"""The search endpoints (``/health``, ``/text``, ``/image``, ``/vector_db``, ``/image/{id}``) as one
router over the backend that :func:`kitaeru.serve.app.create_app` loads into ``app.state``.

Search endpoints are plain functions, so FastAPI runs them in its thread pool and the event loop
keeps accepting connections while a query is encoded; ``/health`` is ``async`` and answered on the
event loop itself, never queued behind searches.
"""

from __future__ import annotations

import mimetypes
import time
from typing import Any, Optional

from fastapi import APIRouter, Depends, File, Form, HTTPException, Path as PathParam, Request, UploadFile
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel

from kitaeru import __version__
from kitaeru.core.errors import DataError

from .backend import SearchBackend, UnsupportedQuery, VectorDbUnavailable
from .safe_files import OutsideRootError

TOP_K_MAX = 100
QUERY_MAX_CHARS = 2000
# Pixel bound for uploads: a 10 MB PNG of one colour can still decode to gigabytes.
MAX_UPLOAD_PIXELS = 64_000_000


class ErrorBody(BaseModel):
    """The one shape of every error answer (4xx/5xx): one line saying what is wrong and where."""

    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "Bad input (not an image, an unsupported query)", 403: "Outside the served folder",
            404: "Not found", 413: "Too large (bytes or pixels)", 422: "Invalid parameter",
            503: "Backend not loaded"}
    return {code: {"model": ErrorBody, "description": text[code]} for code in codes}


async def _search_in_as_sent(request: Request) -> Optional[str]:
    """``search_in`` exactly as the form carried it: FastAPI reads an empty form value as "not sent"
    (the default), but ``""`` is not one of the schema's enum values and must be refused."""
    form = await request.form()  # parsed once: Starlette caches it for the endpoint's own fields
    value = form.get("search_in")
    return value if isinstance(value, str) else None



def backend_of(request: Request) -> SearchBackend:
    """The loaded search backend, or 503 naming why there is none."""
    backend = getattr(request.app.state, "backend", None)
    if backend is None:
        raise HTTPException(503, "the search backend is not loaded" if request.app.state.has_search
                            else "this server has no search backend (start it with --output-dir or --index)")
    return backend

def target_for(backend: SearchBackend, search_in: Optional[str]) -> str:
    if search_in is None:  # not sent: the default; an empty value is not one of the enum's
        return backend.search_targets[0]
    if search_in not in backend.search_targets:
        raise HTTPException(422, f"search_in: '{search_in}' is not one of {', '.join(backend.search_targets)}")
    return search_in


# Stateless: every endpoint reads the backend from its request's app, so one router serves any app.
router = APIRouter()


def search_router() -> APIRouter:
    """The search endpoints; ``app.state.backend`` and ``app.state.has_search`` are set by the app."""
    return router


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/docs")

# ``async``: answered on the event loop itself, never queued behind searches in the thread pool
# (it only reads attributes the backend set at start-up)
@router.get("/health", summary="Server status and what it searches", responses=_errors(503))
async def health(request: Request) -> dict[str, Any]:
    if not request.app.state.has_search:
        return {"status": "ok", "version": __version__, "backend": None}
    backend = backend_of(request)
    return {
        "status": "ok",
        "version": __version__,
        "backend": backend.kind,
        "items": len(backend),
        "text_queries": backend.supports_text,
        "search_in": list(backend.search_targets),
        "max_upload_bytes": request.app.state.max_upload_bytes,
        **backend.describe(),
    }

@router.post("/text", summary="Nearest scenes/images to a text query", responses=_errors(400, 413, 422, 503))
def search_text(
    request: Request,
    query: str = Form(..., min_length=1, max_length=QUERY_MAX_CHARS, pattern=r"\S",
                      description="The text to search for (not only spaces)."),
    top_k: int = Form(5, ge=1, le=TOP_K_MAX, description=f"How many results (1–{TOP_K_MAX})."),
    search_in: Optional[str] = Form(None, description="What to compare with (see /health: search_in); default the first."),
    sent_search_in: Optional[str] = Depends(_search_in_as_sent),
) -> dict[str, Any]:
    backend = backend_of(request)
    if not query.strip():
        raise HTTPException(422, "query: empty text")
    target = target_for(backend, sent_search_in if sent_search_in == "" else search_in)
    started = time.perf_counter()
    try:
        results = backend.search_text(query, top_k, target)
    except UnsupportedQuery as exc:
        raise HTTPException(400, str(exc)) from None
    return _answer({"query": query}, top_k, target, results, started)

@router.post("/image", summary="Nearest scenes/images to an uploaded image", responses=_errors(400, 413, 422, 503))
def search_image(
    request: Request,
    file: UploadFile = File(..., description="The query image (JPEG, PNG, ...; at most 10 MB)."),
    top_k: int = Form(5, ge=1, le=TOP_K_MAX, description=f"How many results (1–{TOP_K_MAX})."),
    search_in: Optional[str] = Form(None, description="What to compare with (see /health: search_in); default the first."),
    sent_search_in: Optional[str] = Depends(_search_in_as_sent),
) -> dict[str, Any]:
    backend = backend_of(request)
    target = target_for(backend, sent_search_in if sent_search_in == "" else search_in)
    limit = request.app.state.max_upload_bytes
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"upload larger than the limit of {limit} bytes")
    image = decode_upload(data, file.filename or "upload", min_side=backend.query_image_size)
    started = time.perf_counter()
    try:
        results = backend.search_image(image, top_k, target)
    except UnsupportedQuery as exc:
        raise HTTPException(400, str(exc)) from None
    return _answer({"filename": file.filename}, top_k, target, results, started)

@router.get("/vector_db", summary="The multimodal vector DB (versioned shape)", responses={
    200: {"description": "The vector DB", "content": {"application/json": {"schema": {"type": "object"}}}},
    **_errors(404, 503)})
def vector_db(request: Request) -> Response:
    backend = backend_of(request)
    try:
        path = backend.vector_db_file()
        if path is not None:
            return FileResponse(path, media_type="application/json")
        return Response(backend.vector_db(), media_type="application/json")
    except VectorDbUnavailable as exc:
        raise HTTPException(404, str(exc)) from None

@router.get("/image/{item_id}", summary="The image of a search result (from the served data folder only)", responses={
    200: {"description": "The image file", "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}},
    **_errors(403, 404, 422, 503)})
def item_image(
    request: Request,
    item_id: str = PathParam(..., max_length=512, description="A result's id (or a scene_id)."),
) -> FileResponse:
    backend = backend_of(request)
    try:
        real = backend.image_file(item_id)
    except KeyError:
        raise HTTPException(404, f"no item '{item_id}'") from None
    except OutsideRootError:
        raise HTTPException(403, "this image is outside the served data folder") from None
    except FileNotFoundError as exc:
        raise HTTPException(404, str(exc)) from None
    media = mimetypes.guess_type(real.name)[0] or "application/octet-stream"
    return FileResponse(real, media_type=media)


def decode_upload(data: bytes, name: str, min_side: int | None = None):
    """The uploaded bytes as an RGB image, or an HTTP 400/413 naming the problem (JPEGs much larger
    than ``min_side`` are decoded at reduced scale, as ``kitaeru embed`` decodes them)."""
    from kitaeru.data.images import ImageRejected, open_image

    if not data:
        raise HTTPException(400, f"{name}: empty upload")
    try:
        # the one opener: header checked (pixels, aspect ratio, min side) before decoding or resizing
        return open_image(data, min_side=min_side, max_pixels=MAX_UPLOAD_PIXELS)
    except ImageRejected as exc:
        raise HTTPException(413 if exc.too_large else 400, f"{name}: {str(exc).split(': ', 1)[-1]}") from None
    except DataError as exc:
        reason = str(exc).split(': ', 1)[-1]
        if "cannot identify" in reason:
            raise HTTPException(400, f"{name}: not an image (cannot identify the file format)") from None
        raise HTTPException(400, f"{name}: not a readable image ({reason})") from None


def _answer(head: dict[str, Any], top_k: int, target: str, results: list[dict[str, Any]], started: float) -> dict[str, Any]:
    return {
        **head,
        "top_k": top_k,
        "search_in": target,
        "took_ms": round((time.perf_counter() - started) * 1000, 3),
        "results": results,
    }
