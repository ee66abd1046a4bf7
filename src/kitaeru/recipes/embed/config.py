"""Config schema of ``kitaeru embed``: images or texts → vectors in Parquet or ``.npy``.

Light imports only: this module is read by the CLI before anything heavy loads. Each field is
declared once with its command-line spellings; the option names and defaults are the planned
interface's (``--model vit_l_14 --pretrained openclip --image-size 224 --pool mean --batch-size 8``).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import field_validator, model_validator

from kitaeru.core.config import MAX_IMAGE_SIZE, RecipeConfig, setting


class EmbedConfig(RecipeConfig):
    """One embedding job: where the images (or texts) come from, which encoder, where vectors go."""

    image_dir: Optional[str] = setting(
        None,
        "Folder of images, searched recursively (jpg, png, webp, bmp, tif, gif): a local path or an "
        "fsspec URL such as s3://bucket/nuscenes/samples/CAM_FRONT.",
        aliases=["data-dir"], metavar="DIR",
    )
    texts: Optional[str] = setting(None, "A text file (local or URL), one text per line, to embed instead of images "
                                   "(CLIP-family models).", metavar="FILE")
    text: Optional[list[str]] = setting(None, "A text to embed instead of images (repeat the option for several; "
                                        "CLIP-family models).")
    output: str = setting(
        ...,
        "Output: X.parquet (one file), X.npy (float32 matrix + X.meta.parquet beside it), or a folder "
        "(numbered Parquet shards part-00000.parquet, ...). Local path or fsspec URL (no --resume for URLs).",
        aliases=["out"], short="-o", metavar="PATH",
    )
    model: str = setting(
        "vit_l_14",
        "Encoder: vit_l_14 (= open_clip:ViT-L-14), any OpenCLIP name (open_clip:ViT-B-32), "
        "timm:<name> or torchvision:<name>.",
    )
    pretrained: str = setting(
        "openclip",
        "Weights: openclip (the model's standard weights; for timm/torchvision their default weights), "
        "an OpenCLIP tag (laion2b_s32b_b82k, openai...), a local checkpoint file, or none (random init, seeded).",
    )
    image_size: Optional[int] = setting(224, "Square model input side in pixels (none: the model's own).",
                                        aliases=["imgsz"], ge=1, le=MAX_IMAGE_SIZE)
    resize: Literal["crop", "pad"] = setting(
        "crop", "crop = shorter side to image-size then centre crop; pad = longer side to image-size then pad to a square."
    )
    pool: Literal["mean", "cls"] = setting(
        "mean",
        "ViTs: mean = mean of the final patch tokens (class token excluded) after the final norm and "
        "projection; cls = the class token as the model's own image encoder returns it. CNNs: mean (global average pooling) only.",
    )
    batch_size: int = setting(8, "Images per forward pass.", aliases=["batch"], ge=1)
    workers: Optional[int] = setting(None, "Parallel decode worker processes (0 = decode in the main process; "
                                     "not given: min(8, CPUs - 1), at least 1).", ge=0)
    device: str = setting("auto", "Device: auto|cuda|mps|cpu or cuda:N (auto = cuda, then mps, then cpu).")
    gpu_decode: bool = setting(True, "On CUDA, decode JPEGs on the GPU (nvJPEG) in batches; other files and JPEGs it "
                               "cannot decode go through the CPU workers. --no-gpu-decode: every file on the CPU.")
    limit: Optional[int] = setting(None, "Embed at most this many images in this run (the first ones, in path order, "
                                   "not yet embedded).", ge=1)
    normalize: bool = setting(True, "L2-normalise every vector (cosine similarity = inner product). --no-normalize "
                              "keeps raw vectors.")
    resume: bool = setting(False, "Continue an interrupted or partial job: files already in --output (or its .parts "
                           "folder) are skipped.")
    shard_size: int = setting(4096, "Rows per Parquet shard; a finished shard is never lost, even if the job is killed.",
                              ge=1)

    # ---- scaling out ----
    engine: Literal["local", "spark"] = setting(
        "local", "local = this process (or this torchrun rank: each rank embeds its share into --output's folder); "
        "spark = a PySpark job, one task per input partition writing its own Parquet parts (the [spark] extra).")
    spark_master: str = setting("local[*]", "--engine spark: the Spark master URL (local[N], spark://host:7077, yarn, ...).")
    spark_partitions: Optional[int] = setting(None, "--engine spark: input partitions = tasks (default: Spark's "
                                              "default parallelism).", ge=1)

    @field_validator("text")
    @classmethod
    def _no_empty_text(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is not None and any(not t.strip() for t in value):
            raise ValueError("texts must not be empty")
        return value or None

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
