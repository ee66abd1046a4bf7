"""Embedding sharded on existing engines: torchrun ranks, a Spark job, webdataset tar shards.

Each must produce exactly the rows and vectors of the one-process run (same order, bit for bit:
every writer embeds whole batches of the one-process run, with one compute thread like the reference).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from guards import HANG_GUARD_S

from kitaeru.index.embeddings_io import read_embeddings

TINY = ["--model", "timm:test_vit", "--pretrained", "none", "--image-size", "32", "--batch-size", "4"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_compute_thread):
    """One torch thread in this process, as torchrun and one-CPU Spark tasks give each writer."""


@pytest.fixture(scope="module")
def images(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    shutil.copytree(shared_data / "coco8" / "images", root / "coco")
    shutil.copytree(shared_data / "nuscenes-scene-0061" / "samples", root / "nuscenes")
    return root


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    from kitaeru.cli import run

    out = tmp_path_factory.mktemp("ref") / "one.parquet"
    assert run(["embed", "--image-dir", str(images), "--out", str(out), "--workers", "0", *TINY]) == 0
    return read_embeddings(out)


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession for the whole test session (the JVM starts once)."""
    pytest.importorskip("pyspark")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("kitaeru-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def same_as(reference, path) -> None:
    got = read_embeddings(path)
    assert got.metadata.column("path").to_pylist() == reference.metadata.column("path").to_pylist()
    assert np.array_equal(got.vectors, reference.vectors)


@pytest.mark.slow
def test_torchrun_ranks_write_their_own_parts_and_index_reads_the_folder(cli, images, reference, tmp_path):
    out = tmp_path / "parts"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               "-m", "kitaeru", "embed", "--image-dir", str(images), "--out", str(out), "--workers", "0", *TINY, "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # rank 0's combined summary only
    assert (summary["writers"], summary["embedded"], summary["rows_in_output"]) == (2, 14, 14)
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-rank00000-00000.parquet", "part-rank00001-00000.parquet"]
    same_as(reference, out)
    # each rank resumes its own parts: nothing is embedded twice
    proc = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=HANG_GUARD_S, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(proc.stdout)
    assert again["embedded"] == 0 and again["already_embedded"] == 14 and again["rows_in_output"] == 14
    r = cli("index", "build", "--embeddings", out, "--index-out", tmp_path / "parts.faiss", "--type", "flat", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["ntotal"] == 14


@pytest.mark.slow
def test_spark_job_writes_the_one_process_rows(cli, spark, images, reference, tmp_path):
    out = tmp_path / "spark_parts"
    r = cli("embed", "--image-dir", images, "--out", out, *TINY, "--engine", "spark", "--spark-master", "local[2]", "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["engine"] == {"name": "spark", "master": "local[2]", "partitions": 2}
    assert summary["rows_in_output"] == 14 and summary["writers"] == 2
    same_as(reference, out)
    assert spark.sparkContext._jsc is not None  # the shared session was used, not stopped


def test_webdataset_tar_shards_as_input(cli, images, reference, tmp_path):
    from kitaeru.recipes.embed.webdataset import expand_braces, write_shards
    from kitaeru.recipes.embed.data import list_images

    shards = write_shards(list_images(str(images)), tmp_path / "shards", per_shard=5)
    assert [p.name for p in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    assert expand_braces("s/{000..002}.tar") == ["s/000.tar", "s/001.tar", "s/002.tar"]
    for source, out in ((tmp_path / "shards", tmp_path / "folder.parquet"),
                        (f"{tmp_path}/shards/{{00000..00002}}.tar", tmp_path / "braces.parquet")):
        r = cli("embed", "--image-dir", source, "--out", out, "--workers", "2", *TINY, "--json")
        assert r.exit_code == 0, r.stderr
        assert read_embeddings(out).metadata.column("path").to_pylist()[0].endswith("00000.tar::000000000.jpg")
        assert np.array_equal(read_embeddings(out).vectors, reference.vectors)
    r = cli("embed", "--image-dir", f"{tmp_path}/shards/{{00000..00003}}.tar", "--out", tmp_path / "x.parquet", *TINY)
    assert r.exit_code == 2 and "00003.tar: tar shard not found" in r.stderr


def test_several_writers_need_a_folder_output(cli, images, tmp_path):
    r = cli("embed", "--image-dir", images, "--out", tmp_path / "v.parquet", *TINY, "--engine", "spark")
    assert r.exit_code == 2 and "folder of Parquet parts" in r.stderr
    r = cli("embed", "--text", "a truck", "--out", tmp_path / "t", "--model", "vit_l_14", "--engine", "spark")
    assert r.exit_code == 2 and "--image-dir jobs" in r.stderr
