"""``/docs`` without a network: Swagger UI's JavaScript and CSS come from the ``swagger-ui-py``
package and are served by this app under ``/docs/assets``, not fetched from a CDN (FastAPI's default
page loads them from jsdelivr, so it is blank on an offline machine)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

ASSETS_ROUTE = "/docs/assets"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")


def swagger_assets_dir() -> Path:
    """The folder of Swagger UI's files inside the installed ``swagger-ui-py`` package."""
    from kitaeru.core.errors import MissingExtraError

    spec = importlib.util.find_spec("swagger_ui")  # located, not imported: only its files are used
    folder = Path(spec.origin).parent / "static" if spec is not None and spec.origin else None
    if folder is None or not all((folder / name).is_file() for name in ASSETS):
        raise MissingExtraError("swagger-ui-py", "all", "the /docs page of kitaeru serve")
    return folder


def add_offline_docs(app: Any, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at ``docs_url`` from local files (the app is created with ``docs_url=None``)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, HTMLResponse

    folder = swagger_assets_dir()

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url, title=f"{app.title} - API documentation",
            swagger_js_url=f"{ASSETS_ROUTE}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS_ROUTE}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_ROUTE}/favicon-32x32.png",
            # no badge from validator.swagger.io: nothing on the page leaves this server
            swagger_ui_parameters={"validatorUrl": None})

    # three fixed files, not a StaticFiles mount: nothing else of the package folder is reachable
    media = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}

    def serve(path: Path):
        # no parameters: FastAPI would read any argument from the query string
        async def asset() -> FileResponse:
            return FileResponse(path, media_type=media[path.suffix], headers={"cache-control": "max-age=86400"})

        return asset

    for name in ASSETS:
        app.add_api_route(f"{ASSETS_ROUTE}/{name}", serve(folder / name), methods=["GET"], include_in_schema=False)
