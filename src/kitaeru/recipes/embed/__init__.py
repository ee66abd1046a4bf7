"""``kitaeru embed``: images (or texts) → one vector each, in Parquet or ``.npy``.

The job, in order:

1. **Inputs** (:mod:`.data`): every image under ``--image-dir`` (recursive, sorted; a local folder or
   an fsspec URL such as ``s3://bucket/nuscenes/samples/CAM_FRONT``), or the texts of ``--texts FILE``
   / ``--text "..."``. A wrong path or output name fails here, before any model loads.
2. **Encoder** (:mod:`kitaeru.models.image_encoders`): ``--model vit_l_14 --pretrained openclip`` (the
   default: OpenCLIP ViT-L/14), any ``open_clip:``, ``timm:`` or ``torchvision:`` name, or a local
   checkpoint; ``--pool mean|cls`` picks the image vector; ``--image-size`` / ``--resize crop|pad`` the
   input. Random-init encoders (``--pretrained none``) are seeded, so ``index search`` re-creates them.
3. **Embed** (:mod:`.pipeline`): worker processes decode (JPEGs at reduced size when the model needs
   fewer pixels) while the encoder runs in batches (bf16 + channels-last on CUDA); unreadable images
   are skipped, counted and listed.
4. **Write** (:mod:`.output`): numbered Parquet shards as the job runs (a killed job loses at most one
   shard; ``--resume`` skips what is already embedded), merged into ``X.parquet`` or ``X.npy`` +
   ``X.meta.parquet`` at the end, or kept as a folder; ``X.summary.json`` beside it holds the counts,
   speed, device and resolved config (also printed by ``--json``).

Scaling out: under ``torchrun --nproc_per_node N`` each rank embeds its share (whole batches, by
``RANK``/``WORLD_SIZE``) into its own ``part-rankRRRRR-*.parquet`` of the ``--output`` folder;
``--engine spark`` (:mod:`.spark`) runs one Spark task per partition the same way. Inputs may also be
webdataset tar shards (:mod:`.webdataset`). Either way the folder holds the rows and
vectors of the one-process run, and ``kitaeru index build`` reads the folder.

Next: ``kitaeru index build --embeddings X.parquet --output X.faiss`` and ``kitaeru map``.
"""

from __future__ import annotations

from typing import Any

from kitaeru.recipes.catalog import JOBS
from kitaeru.core.recipe import Mode, Recipe
from kitaeru.recipes.embed.config import EmbedConfig

__all__ = ["EmbedConfig", "RECIPE", "check", "embed"]


def check(config: EmbedConfig) -> None:
    """Cheap checks before any model import: the output name, and a local input that exists."""
    from pathlib import Path

    from kitaeru.core.errors import ConfigError, DataError
    from kitaeru.core.storage import is_remote
    from kitaeru.recipes.embed.output import output_kind

    output_kind(config.output)
    from kitaeru.core.storage import check_output_path

    check_output_path(config.output, setting="--output", kind="any")
    if config.resume and config.text_mode:
        raise ConfigError("--resume applies to --image-dir jobs (texts are re-embedded in one go)")
    from kitaeru.core.distributed import place

    if config.engine == "spark" or place().world_size > 1:  # several writers: a folder of parts
        how = "--engine spark" if config.engine == "spark" else "torchrun"
        if config.text_mode:
            raise ConfigError(f"{how} embeds --image-dir jobs (embed texts in one process)")
        if is_remote(config.output) or output_kind(config.output) != "folder":
            raise ConfigError(f"--output: {how} writes a local folder of Parquet parts (one per rank or task); give a "
                              f"folder name without suffix, not {config.output} (kitaeru index build reads the folder)")
    from kitaeru.recipes.embed.webdataset import shard_paths

    tar_shards = shard_paths(config.image_dir) if config.image_dir else []
    for shard in tar_shards:
        if not is_remote(shard) and not Path(shard.removeprefix("file://")).is_file():
            raise DataError(f"--image-dir: {shard}: tar shard not found")
    for flag, value in (("--image-dir", None if tar_shards else config.image_dir), ("--texts", config.texts)):
        if value and not is_remote(value):
            local = Path(value[len("file://"):] if value.startswith("file://") else value).expanduser()
            wanted_dir = flag == "--image-dir"
            if not (local.is_dir() if wanted_dir else local.is_file()):
                raise DataError(f"{flag}: {value}: not found or not a {'folder' if wanted_dir else 'file'}")


def resume_command(config: EmbedConfig) -> str:
    """The ``kitaeru embed`` command line that continues this job: its non-default settings + ``--resume``."""
    import shlex

    words = ["kitaeru", "embed"]
    for name, field in EmbedConfig.model_fields.items():
        value = getattr(config, name)
        if name == "resume" or value == field.get_default(call_default_factory=True):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            for item in value:
                words += [flag, str(item)]
        else:
            words += [flag, str(value)]
    return " ".join(shlex.quote(w) for w in words + ["--resume"])


def embed(config: EmbedConfig) -> dict[str, Any]:
    """Embed every input and write the vectors to ``config.output``; returns the run summary.

    Ctrl-C keeps every finished vector (see :mod:`.output`) and ends with the command that resumes."""
    from kitaeru.core.errors import RunInterrupted
    from kitaeru.core.storage import is_remote
    try:
        if config.engine == "spark":
            from kitaeru.recipes.embed.spark import run_spark

            return run_spark(config)
        from kitaeru.recipes.embed.pipeline import run_embed

        return run_embed(config)
    except KeyboardInterrupt:
        if config.text_mode or is_remote(config.output):
            raise RunInterrupted("interrupted; nothing is kept for texts or a remote --output: run the command again") from None
        raise RunInterrupted(f"interrupted; resume with: {resume_command(config)}") from None


def _print_summary(summary: dict[str, Any]) -> None:
    from kitaeru.recipes.embed.pipeline import print_summary

    print_summary(summary)


RECIPE = Recipe(
    name="embed",
    help=JOBS["embed"],
    modes=[
        Mode(
            name="embed",
            schema=EmbedConfig,
            run=embed,
            check=check,
            summary=_print_summary,
            presets=True,
            help="Embed every image under --image-dir (or the given texts) and write the vectors to --output.",
            examples=[
                "kitaeru embed --model vit_l_14 --pretrained openclip --image-dir s3://bucket/nuscenes/samples/CAM_FRONT "
                "--image-size 224 --pool mean --batch-size 8 --output vectors/embeddings.parquet",
                "kitaeru embed --cfg-name nuscenes_vitl14 --image-dir /data/nuscenes/samples --output vectors/shards/ --resume",
                "kitaeru embed --model vit_l_14 --text \"a truck at an intersection\" --output vectors/q.npy --json",
                "kitaeru embed --image-dir photos/ --output v.parquet pool=cls batch_size=32",
                "kitaeru embed --image-dir 'laion/{00000..00127}.tar' --engine spark --spark-master local[8] --output vectors/parts",
            ],
        )
    ],
)
