"""The FastAPI application: text and image search over one backend, with bounded inputs.

Endpoints::

    GET  /health          status, backend kind, item count, models
    POST /text            form: query, top_k (1–100, default 5), search_in
    POST /image           multipart: file (≤ 10 MB, an image), top_k, search_in
    GET  /vector_db       the multimodal vector DB (versioned shape); 404 on an index server
    GET  /image/{id}      a result's image, only from the served data folder
    GET  /docs            OpenAPI documentation (Swagger UI served from local files: works offline)

The backend is created once by the lifespan handler (models loaded at start-up); each request
only encodes its query and searches. Search endpoints are plain functions, so FastAPI runs them
in its thread pool and the event loop keeps accepting connections while a query is encoded.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, Callable, Optional, Sequence

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kitaeru import __version__
from kitaeru.core.console import info

from .backend import SearchBackend
from .limits import MAX_UPLOAD_BYTES, MULTIPART_OVERHEAD_BYTES, BodySizeLimit
# the endpoints and the names other modules import from here
from .search_routes import MAX_UPLOAD_PIXELS, QUERY_MAX_CHARS, TOP_K_MAX, ErrorBody, decode_upload  # noqa: F401

def _validation_detail(exc: RequestValidationError) -> str:
    """FastAPI's list of problems as one line: ``top_k: Input should be ...; query: Field required``."""
    parts = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):  # where it was, not what
            loc = loc[1:]
        where = ".".join(str(p) for p in loc)
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    load_backend: Optional[Callable[[], SearchBackend]],
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    title: str = "kitaeru scene search",
    routers: Sequence[APIRouter] = (),
    on_startup: Sequence[Callable[[FastAPI], Any]] = (),
) -> FastAPI:
    """The search API over the backend that ``load_backend`` creates once at start-up.

    ``routers``: more endpoints served by the same app (floor-plan generation, say); ``on_startup``:
    what they load once before the first request (called with the app, in a worker thread, after
    the search backend). ``load_backend=None`` serves only those: the search endpoints then answer
    503. A :class:`~kitaeru.core.errors.KitaeruError` raised while loading is kept in
    ``app.state.startup_error`` (the server refuses to start and the CLI prints it on one line).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.startup_error = None
        try:
            app.state.backend = await run_in_threadpool(load_backend) if load_backend is not None else None
            for hook in on_startup:
                await run_in_threadpool(hook, app)
        except Exception as exc:
            app.state.startup_error = exc
            raise
        url = getattr(app.state, "url", None)
        if url:  # set by run_server: the real port, also when port 0 picked a free one
            items = f" ({len(app.state.backend)} items)" if app.state.backend is not None else ""
            info(f"search API ready on {url}{items}")
            info(f"OpenAPI docs: {url}/docs")
        yield
        app.state.backend = None

    app = FastAPI(
        title=title,
        version=__version__,
        description="Text and image search over scene/image embeddings (kitaeru serve).",
        lifespan=lifespan,
        docs_url=None,  # served from local files below: the default page loads Swagger UI from a CDN
        redoc_url=None,  # ReDoc's page has no offline variant
    )
    from .docs import add_offline_docs

    add_offline_docs(app)
    app.state.startup_error = None
    app.state.backend = None

    app.openapi = lambda: _openapi_with_the_backends_targets(app)  # type: ignore[method-assign]

    @app.exception_handler(StarletteHTTPException)
    async def _one_line_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # the detail may quote what the client sent (an id with a newline): keep it one line
        detail = str(exc.detail).replace("\r", "\\r").replace("\n", "\\n")
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _one_line_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_detail(exc)}, status_code=422)

    app.state.max_upload_bytes = int(max_upload_bytes)
    app.add_middleware(
        BodySizeLimit,
        max_body_bytes=int(max_upload_bytes) + MULTIPART_OVERHEAD_BYTES,
        detail=f"upload larger than the limit of {max_upload_bytes} bytes",
    )

    from .search_routes import search_router

    app.state.has_search = load_backend is not None
    app.include_router(search_router())
    for router in routers:
        app.include_router(router)
    return app


def _openapi_with_the_backends_targets(app: FastAPI) -> dict[str, Any]:
    """The schema lists the ``search_in`` values this server's backend accepts (known once it is
    loaded), so a request the schema allows is one the server accepts."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.get("components", {}).get("schemas", {}).values()
    for component in components:
        upload = component.get("properties", {}).get("file")
        if upload is not None and upload.get("type") == "string":
            upload["minLength"] = 1  # an empty upload is refused (400): the schema says so
    backend = getattr(app.state, "backend", None)
    if backend is not None:
        for component in components:
            field = component.get("properties", {}).get("search_in")
            if field is not None:
                component["properties"]["search_in"] = {
                    "type": "string", "enum": list(backend.search_targets),
                    "title": field.get("title", "Search In"), "description": field.get("description", "")}
        app.openapi_schema = schema  # final once the backend is there
    return schema
