"""Config schema of ``kitaeru embed`` (seed 001): images or texts → vectors in Parquet or ``.npy``.

Light imports only: this module is read by the CLI before anything heavy loads. The option names
and defaults are the seed's (``--model vit_l_14 --pretrained openclip --image-size 224 --pool mean
--batch-size 8``).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, PositiveInt, field_validator, model_validator

from kitaeru.core.config import RecipeConfig

RECIPE = "embed"


class EmbedConfig(RecipeConfig):
    """One embedding job: where the images (or texts) come from, which encoder, where vectors go."""

    model: str = Field(
        "vit_l_14",
        description="Encoder: vit_l_14 (= open_clip:ViT-L-14), any OpenCLIP name (open_clip:ViT-B-32), "
        "timm:<name> or torchvision:<name>.",
    )
    pretrained: str = Field(
        "openclip",
        description="Weights: openclip (the model's standard weights; for timm/torchvision their default weights), "
        "an OpenCLIP tag (laion2b_s32b_b82k, openai...), a local checkpoint file, or none (random init, seeded).",
    )
    image_dir: Optional[str] = Field(
        None,
        description="Folder of images, searched recursively (jpg, png, webp, bmp, tif, gif): a local path or an "
        "fsspec URL such as s3://bucket/nuscenes/samples/CAM_FRONT.",
    )
    texts: Optional[str] = Field(None, description="A text file (local or URL), one text per line, to embed instead of images (CLIP-family models).")
    text: Optional[list[str]] = Field(None, description="A text to embed instead of images (repeat the option for several; CLIP-family models).")
    image_size: Optional[PositiveInt] = Field(224, description="Square model input side in pixels (none: the model's own).")
    resize: Literal["crop", "pad"] = Field(
        "crop", description="crop = shorter side to image-size then centre crop; pad = longer side to image-size then pad to a square."
    )
    pool: Literal["mean", "cls"] = Field(
        "mean",
        description="ViTs: mean = mean of the final patch tokens (class token excluded) after the final norm and "
        "projection; cls = the class token as the model's own image encoder returns it. CNNs: mean (global average pooling) only.",
    )
    batch_size: PositiveInt = Field(8, description="Images per forward pass.")
    workers: Optional[int] = Field(None, ge=0, description="Parallel decode worker processes (0 = decode in the main process; not given: min(8, CPUs - 1), at least 1).")
    device: str = Field("auto", description="Device: auto|cuda|mps|cpu or cuda:N (auto = cuda, then mps, then cpu).")
    out: str = Field(
        description="Output: X.parquet (one file), X.npy (float32 matrix + X.meta.parquet beside it), or a folder "
        "(numbered Parquet shards part-00000.parquet, ...). Local path or fsspec URL (no --resume for URLs).",
    )
    limit: Optional[PositiveInt] = Field(None, description="Embed at most this many images in this run (the first ones, in path order, not yet embedded).")
    normalize: bool = Field(True, description="L2-normalise every vector (cosine similarity = inner product). --no-normalize keeps raw vectors.")
    resume: bool = Field(False, description="Continue an interrupted or partial job: files already in --out (or its .parts folder) are skipped.")
    shard_size: PositiveInt = Field(4096, description="Rows per Parquet shard; a finished shard is never lost, even if the job is killed.")

    @field_validator("text")
    @classmethod
    def _no_empty_text(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and any(not t.strip() for t in value):
            raise ValueError("texts must not be empty")
        return value

    @model_validator(mode="after")
    def _one_input(self) -> "EmbedConfig":
        given = [name for name, v in (("image_dir", self.image_dir), ("texts", self.texts), ("text", self.text)) if v]
        if len(given) != 1:
            raise ValueError(
                "give exactly one input: --image-dir DIR, --texts FILE or --text \"...\""
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    @property
    def text_mode(self) -> bool:
        return bool(self.texts or self.text)
