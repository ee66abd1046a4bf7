"""Settings of ``kitaeru map``: each field declared once (the command line is generated from them)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import model_validator

from kitaeru.core.config import RecipeConfig, setting
from kitaeru.core.errors import ConfigError

DEFAULT_MAX_POINTS = 200_000
DEFAULT_THUMBNAILS = 2_000


class MapConfig(RecipeConfig):
    """Where the vectors come from, what to draw, and the UMAP settings."""

    embeddings: Optional[str] = setting(
        None,
        description="An embed output: .parquet file, folder of .parquet shards (path + embedding columns) or .npy "
        "(with X.meta.parquet beside it, if any). Local path or fsspec URL.",
    )
    output_dir: Optional[str] = setting(
        None, description="A multimodal training output folder: its vector_db.json is mapped (one point per scene)."
    )
    modality: Literal["image", "text"] = setting(
        "image", description="With --output-dir: map the scenes' image or text embeddings."
    )
    data_dir: Optional[str] = setting(
        None, aliases=["dataset", "data"], short="-d",
        description="Folder that relative image paths are read from for thumbnails (default: the folder the "
        "vector DB records, else the paths as stored).",
    )
    output: str = setting("map.png", "The PNG scatter plot to write.", aliases=["out"], short="-o", metavar="FILE")
    html: Optional[str] = setting(None, description="Also write an interactive Plotly HTML map (hover: path/description + thumbnail).")
    output_json: Optional[str] = setting(None, "Also write the 2-D coordinates to this JSON file (one entry per point); "
                                        "--json prints the run summary instead.", aliases=["json_out", "coords"], metavar="FILE")
    color_by: Optional[str] = setting(
        None, description="Colour points by this metadata column (categories get a legend, numbers a colour bar); "
        "default: a column with a few categories (weather, time, location, ...) when one exists; 'none' = one colour."
    )
    sample: Optional[int] = setting(
        None, ge=1, description="Map a random subset of this many points (seeded by --random-state)."
    )
    max_points: int = setting(
        DEFAULT_MAX_POINTS,
        ge=0,
        description="Without --sample, inputs larger than this are sampled down to it with a warning (0 = no cap).",
    )
    thumbnails: int = setting(
        DEFAULT_THUMBNAILS, ge=0, description="At most this many points get a hover thumbnail in the HTML (0 = none)."
    )
    thumbnail_size: int = setting(64, ge=16, le=256, description="Longest side of the hover thumbnails, in pixels.")
    n_neighbors: int = setting(15, ge=2, description="UMAP n_neighbors (local vs global structure).")
    min_dist: float = setting(0.1, ge=0.0, le=1.0, description="UMAP min_dist (how tightly points pack).")
    metric: str = setting("cosine", description="UMAP metric (cosine, euclidean, manhattan, correlation, ...).")
    random_state: int = setting(
        42, description="UMAP random_state (reproducible layout); a negative value = unseeded, multi-threaded."
    )
    plotly_js: Literal["inline", "cdn"] = setting(
        "inline", description="inline = the HTML embeds plotly.js (~4.6 MB, works offline); cdn = loads it from the web."
    )
    title: Optional[str] = setting(None, description="Title of the plots (default: the input's name).")

    @model_validator(mode="after")
    def _one_source(self) -> "MapConfig":
        if bool(self.embeddings) == bool(self.output_dir):
            raise ConfigError("map: give exactly one of --embeddings or --output-dir")
        if not self.output.lower().endswith(".png"):
            raise ConfigError(f"--output {self.output}: the scatter plot is a PNG; the name must end in .png")
        if self.html and not self.html.lower().endswith((".html", ".htm")):
            raise ConfigError(f"--html {self.html}: the name must end in .html")
        if self.output_json and not self.output_json.lower().endswith(".json"):
            raise ConfigError(f"--output-json {self.output_json}: the name must end in .json")
        return self
