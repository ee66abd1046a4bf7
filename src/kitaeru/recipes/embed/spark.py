"""``kitaeru embed --engine spark``: the same embedding job as a PySpark job.

The way clip-retrieval distributes inference over a Spark cluster: the driver lists the inputs and
cuts them into partitions of whole batches; each Spark task loads the encoder once and runs the
ordinary one-process pipeline on its partition, writing its own ``part-taskNNNNN-MMMMM.parquet``
files into ``--output`` (a folder every executor can write: local disk for ``local[N]``, a shared
mount otherwise). The driver then writes the folder's ``_summary.json``. Parts in name order hold
the one-process order, and every batch is the one-process batch, so the rows and vectors are those
of ``kitaeru embed`` without Spark. ``--resume`` with the same partitions continues each task's parts.

Nothing here is a cluster of our own: Spark schedules, retries and places the tasks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from kitaeru.core.console import info as say
from kitaeru.core.errors import ConfigError
from kitaeru.recipes.embed.config import EmbedConfig


def spark_session(master: str):
    """The active SparkSession (a notebook's, a test's, ``spark-submit``'s) or a new one on ``master``."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("--engine spark needs PySpark: pip install 'kitaeru[spark]' (and Java 17)") from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    # executors run this interpreter, where kitaeru is installed
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    session = (SparkSession.builder.master(master).appName("kitaeru-embed")
               .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    session.sparkContext.setLogLevel("WARN")
    return session, True


def embed_partition(settings: dict[str, Any], out: str, index: int, paths: list[str]) -> dict[str, Any]:
    """One Spark task: the one-process pipeline on ``paths``, into this task's own parts of ``out``."""
    import torch

    from kitaeru.recipes.embed.pipeline import run_local

    try:
        from pyspark import TaskContext

        context = TaskContext.get()
        threads = int(context.cpus()) if context is not None else 1
    except Exception:  # noqa: BLE001 - an older PySpark: one thread per task, Spark's default task.cpus
        threads = 1
    torch.set_num_threads(max(1, threads))
    # Spark runs the tasks in parallel; each decodes in its own process
    cfg = EmbedConfig.model_validate({**settings, "workers": 0, "engine": "local"})
    return run_local(cfg, out, prefix=f"task{index:05d}-", inputs=paths)


def run_spark(cfg: EmbedConfig) -> dict[str, Any]:
    """Run ``cfg`` as a PySpark job and return the folder's combined summary."""
    from kitaeru.recipes.embed.pipeline import build_inputs, check_parts_output, combine_summaries, share

    check_parts_output(cfg, "--engine spark")
    inputs = build_inputs(cfg)
    if cfg.limit:
        inputs = inputs[: cfg.limit]
    out = str(Path(cfg.output).resolve())
    Path(out).mkdir(parents=True, exist_ok=True)
    session, created = spark_session(cfg.spark_master)
    try:
        context = session.sparkContext
        batches = -(-len(inputs) // cfg.batch_size)
        partitions = max(1, min(cfg.spark_partitions or context.defaultParallelism, batches))
        chunks = [(i, share(inputs, i, partitions, cfg.batch_size)) for i in range(partitions)]
        say(f"Spark {context.master}: {len(inputs)} image(s) in {partitions} partition(s) of whole batches")
        settings = {**cfg.model_dump(mode="json"), "limit": None}
        results = (context.parallelize(chunks, partitions)
                   .map(lambda item: embed_partition(settings, out, item[0], item[1]))
                   .collect())
    finally:
        if created:
            session.stop()
    summary = combine_summaries(cfg, out)
    summary["engine"] = {"name": "spark", "master": cfg.spark_master, "partitions": len(results)}
    from kitaeru.core.storage import atomic_write_json
    from kitaeru.recipes.embed.output import summary_path

    atomic_write_json(summary_path(out), summary)
    return summary
