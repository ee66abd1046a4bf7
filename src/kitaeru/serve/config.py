"""Settings of ``kitaeru serve`` (every field's description is the CLI help text)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from kitaeru.core.config import RecipeConfig
from kitaeru.core.errors import ConfigError


class ServeConfig(RecipeConfig):
    """What to serve and where to listen."""

    output_dir: Optional[str] = Field(
        None, description="A multimodal training output folder (vector_db.json + projectors) to search."
    )
    index: Optional[str] = Field(None, description="A Faiss index (X.faiss with X.index.parquet and X.index.json beside it) to search.")
    model: Optional[str] = Field(
        None,
        description="With --index: the encoder for queries (default: the one the index records; text queries need "
        "an OpenCLIP model).",
    )
    pretrained: Optional[str] = Field(
        None, description="With --index: weights of that encoder (default: the ones the index records)."
    )
    data_dir: Optional[str] = Field(
        None,
        description="The only folder GET /image/{id} serves images from (default: the indexed/training data folder).",
    )
    host: str = Field("127.0.0.1", description="Address to listen on (127.0.0.1 = this machine only; 0.0.0.0 = all).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    device: str = Field("auto", description="Device for the query encoders: auto|cuda|mps|cpu (auto = cuda, then mps, then cpu).")
    threads: Optional[int] = Field(
        None,
        ge=1,
        description="CPU threads torch may use to encode one query (default: torch's choice, about one per core); "
        "on a busy CPU 1 is often fastest for text queries.",
    )
    max_upload_mb: float = Field(10.0, gt=0, le=1024, description="Largest accepted image upload, in MB (bigger → 413).")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="uvicorn log level (debug also logs every request)."
    )

    @model_validator(mode="after")
    def _one_source(self) -> "ServeConfig":
        if bool(self.output_dir) == bool(self.index):
            raise ConfigError("serve: give exactly one of --output-dir (multimodal output) or --index (Faiss index)")
        if self.output_dir and (self.model or self.pretrained):
            raise ConfigError("--model/--pretrained apply to --index only (a multimodal output brings its own encoders)")
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
