"""The search API job: serve text and image search over HTTP.

The job, in order:

1. **What to serve** (:class:`ServeConfig`): a multimodal training output (``--output-dir``:
   its ``vector_db.json`` and trained query encoders) or a Faiss index (``--index``, with the
   encoder it records or ``--model``/``--pretrained``); and/or floor-plan generation
   (``--lora`` adapter of ``kitaeru lora train`` on its ``--pretrained-model``), which adds
   ``POST /api/generate-floor-plan``.
2. **Load once** (:func:`load_backend`, called by the app's start-up): models and vectors are
   loaded before the first request; a bad path or model is one error line and no server.
3. **Serve** (:func:`serve`): the FastAPI app of ``kitaeru.serve`` (a library: endpoints, upload
   limits, safe image files) under uvicorn on ``--host``/``--port`` until Ctrl+C. More routers
   (floor-plan generation) plug into the same app through ``create_app(routers=...)``.

Entry function: :func:`serve` (the command is ``kitaeru serve``). Light imports only here.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import model_validator

from kitaeru.core.config import RecipeConfig, setting
from kitaeru.core.errors import ConfigError
from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe

__all__ = ["RECIPE", "ServeConfig", "load_backend", "serve"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServeConfig(RecipeConfig):
    """What to serve and where to listen."""

    # ---- what to serve ----
    output_dir: Optional[str] = setting(
        None, "A multimodal training output folder (vector_db.json + projectors) to search.", aliases=["output"],
        short="-o", metavar="DIR")
    index: Optional[str] = setting(
        None, "A Faiss index (X.faiss with X.index.parquet and X.index.json beside it) to search.", metavar="FILE")
    model: Optional[str] = setting(
        None, "With --index: the encoder for queries (default: the one the index records; text queries need an OpenCLIP model).")
    pretrained: Optional[str] = setting(
        None, "With --index: weights of that encoder (default: the ones the index records).")
    data_dir: Optional[str] = setting(
        None, "The only folder GET /image/{id} serves images from (default: the indexed/training data folder).",
        aliases=["dataset", "data"], short="-d", metavar="DIR")
    # ---- floor-plan generation ----
    lora: Optional[str] = setting(
        None, "A LoRA adapter of 'kitaeru lora train' (its lora_model/final, any lora_model/checkpoint-N, "
        "lora_model or the run folder): adds "
        "POST /api/generate-floor-plan.", metavar="DIR")
    pretrained_model: Optional[str] = setting(
        None, "The diffusers text-to-image pipeline to generate with (Hub id or local folder; default with --lora: "
        "the base the adapter was trained on).", metavar="ID_OR_DIR")
    generated_dir: Optional[str] = setting(
        None, "Folder the generated floor plans are written to and served from (default: a new temporary folder).",
        metavar="DIR")
    max_steps: int = setting(50, "Most denoising steps a generation request may ask for (more → 422).", ge=1, le=1000)
    # ---- where and how ----
    host: str = setting("127.0.0.1", "Address to listen on (127.0.0.1 = this machine only; 0.0.0.0 = all).")
    port: int = setting(8000, "TCP port (0 = any free port).", ge=0, le=65535)
    device: str = setting("auto", "Device for the query encoders: auto | cuda | cuda:N | mps | cpu (auto = cuda, then mps, then cpu).")
    threads: Optional[int] = setting(
        None, "CPU threads torch may use to encode one query (default: torch's choice, about one per core); "
        "on a busy CPU 1 is often fastest for text queries.", ge=1)
    max_upload_mb: float = setting(10.0, "Largest accepted image upload, in MB (bigger → 413).", gt=0, le=1024)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = setting(
        "info", "uvicorn log level (debug also logs every request).")

    @model_validator(mode="after")
    def _what_to_serve(self) -> "ServeConfig":
        generation = bool(self.lora or self.pretrained_model)
        if self.output_dir and self.index:
            raise ConfigError("serve: give one of --output-dir (multimodal output) or --index (Faiss index), not both")
        if not (self.output_dir or self.index or generation):
            raise ConfigError("serve: give --output-dir (multimodal output), --index (Faiss index) "
                              "or --lora/--pretrained-model (floor-plan generation)")
        if self.output_dir and (self.model or self.pretrained):
            raise ConfigError("--model/--pretrained apply to --index only (a multimodal output brings its own encoders)")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def load_backend(config: ServeConfig, device: str):
    """The search backend ``config`` asks for (models loaded now; call it once, at start-up)."""
    from kitaeru.serve.loading import load_backend as load

    return load(output_dir=config.output_dir, index=config.index, model=config.model, pretrained=config.pretrained,
                data_dir=config.data_dir, device=device, threads=config.threads)


def check(config: ServeConfig) -> None:
    """Cheap checks before torch and the encoders load: the served paths exist."""
    from kitaeru.core.errors import DataError
    from kitaeru.core.storage import exists

    for flag, path in (("--output-dir", config.output_dir), ("--index", config.index), ("--data-dir", config.data_dir)):
        if path and not exists(path):
            raise DataError(f"{path}: not found ({flag})")
    if config.lora or config.pretrained_model:
        _generation_base(config)


def _generation_base(config: ServeConfig) -> str:
    """The pipeline floor plans are generated with (checked cheaply: no diffusers import)."""
    from kitaeru.models.diffusion import base_model_of, check_pretrained_model, resolve_lora_dir

    lora_dir = resolve_lora_dir(config.lora) if config.lora else None
    base = config.pretrained_model or (base_model_of(lora_dir) if lora_dir else None)
    return check_pretrained_model(base, "--pretrained-model")


def floorplan_parts(config: ServeConfig, device: str) -> tuple[list, list]:
    """The generation router and the start-up hook that loads its pipeline once (none without --lora)."""
    if not (config.lora or config.pretrained_model):
        return [], []
    import tempfile

    from kitaeru.serve.floorplan_api import floorplan_router, pipeline_generate_fn

    base = _generation_base(config)
    loaded: dict = {}

    def generate(width: int, height: int, steps: int, seed: int):
        return loaded["fn"](width, height, steps, seed)

    def load(app) -> None:  # noqa: ARG001 - start-up hook signature
        from kitaeru.models.diffusion import load_pipeline

        loaded["fn"] = pipeline_generate_fn(load_pipeline(base, lora=config.lora, device=device))

    image_dir = config.generated_dir or tempfile.mkdtemp(prefix="kitaeru-floorplans-")
    return [floorplan_router(generate, image_dir, max_steps=config.max_steps)], [load]


def serve(config: ServeConfig, *, routers=(), on_startup=()) -> None:
    """Start the search API and serve until Ctrl+C (models load once, before the first request)."""
    check(config)
    from kitaeru.core.console import info, warn
    from kitaeru.core.device import resolve_device
    from kitaeru.serve.app import create_app
    from kitaeru.serve.server import run_server

    chosen = resolve_device(config.device)
    if config.host not in LOCAL_HOSTS:
        warn(f"--host {config.host}: the API is reachable from other machines; it has no authentication")
    gen_routers, gen_hooks = floorplan_parts(config, chosen.device)
    searching = bool(config.output_dir or config.index)
    app = create_app((lambda: load_backend(config, chosen.device)) if searching else None,
                     max_upload_bytes=config.max_upload_bytes,
                     routers=[*routers, *gen_routers], on_startup=[*on_startup, *gen_hooks])
    what = " and ".join(w for w, on in (("the search backend", searching), ("the floor-plan pipeline", bool(gen_hooks))) if on)
    info(f"loading {what} on {chosen.device} ...")
    run_server(app, config.host, config.port, log_level=config.log_level)


RECIPE = Recipe(
    name="serve",
    help=JOBS["serve"],
    modes=[
        Mode(
            "serve", ServeConfig, serve,
            "Start the search API; models are loaded once, then each request encodes its query and searches.",
            examples=[
                "kitaeru serve --output-dir runs/quickstart",
                "kitaeru serve --index indexes/scenes.faiss --port 8080 --threads 1",
                "kitaeru serve --lora runs/lora/train/lora_model/final --pretrained-model models/tiny-sd",
            ],
            presets=True,
        ),
    ],
)
