"""``kitaeru serve``: the text/image search API (FastAPI + uvicorn) over a multimodal output or an index."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kitaeru.core.config import field_help
from kitaeru.serve.config import ServeConfig

from ._common import DEVICE_HELP, CfgNameOption, ConfigFileOption, build_config

app = typer.Typer(help="Serve text and image search over HTTP.")


def _help(name: str) -> str:
    return field_help(ServeConfig, name)


@app.command()
def serve(
    output_dir: Optional[str] = typer.Option(None, "--output-dir", help=_help("output_dir")),
    index: Optional[str] = typer.Option(None, "--index", help=_help("index")),
    model: Optional[str] = typer.Option(None, "--model", help=_help("model")),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help=_help("pretrained")),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help=_help("data_dir")),
    host: Optional[str] = typer.Option(None, "--host", help=_help("host")),
    port: Optional[int] = typer.Option(None, "--port", help=_help("port")),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", help=_help("threads")),
    max_upload_mb: Optional[float] = typer.Option(None, "--max-upload-mb", help=_help("max_upload_mb")),
    log_level: Optional[str] = typer.Option(None, "--log-level", help=_help("log_level")),
    cfg_name: Optional[str] = CfgNameOption,
    config_file: Optional[Path] = ConfigFileOption,
) -> None:
    """Start the search API; models are loaded once, then each request encodes its query and searches.

    Examples: kitaeru serve --output-dir runs/multimodal ; kitaeru serve --index indexes/scenes.faiss
    """
    cfg = build_config(
        ServeConfig, "serve", cfg_name, config_file,
        output_dir=output_dir, index=index, model=model, pretrained=pretrained, data_dir=data_dir, host=host,
        port=port, device=device, threads=threads, max_upload_mb=max_upload_mb, log_level=log_level,
    )
    from kitaeru.core.console import info, warn
    from kitaeru.core.device import resolve_device
    from kitaeru.serve.app import create_app
    from kitaeru.serve.loading import load_backend
    from kitaeru.serve.server import run_server

    chosen = resolve_device(cfg.device)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"--host {cfg.host}: the API is reachable from other machines; it has no authentication")
    app_ = create_app(lambda: load_backend(cfg, chosen.device), max_upload_bytes=cfg.max_upload_bytes)
    info(f"loading the search backend on {chosen.device} ...")
    run_server(app_, cfg.host, cfg.port, log_level=cfg.log_level)
