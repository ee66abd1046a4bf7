"""Ctrl-C while ``multimodal train`` encodes its frozen features: the run stops (exit 130, status
``interrupted``, resume command printed), the batches already encoded stay on disk, and the printed
command encodes only what is missing."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest
from guards import guard, wait_until

from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes


def _ignore_sigint() -> None:
    # What a non-interactive shell does for `kitaeru ... &`: the child starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.slow
def test_ctrl_c_while_encoding_keeps_finished_chunks_and_the_resume_continues(tmp_path, cli):
    scenes = write_sample_scenes(tmp_path / "scenes", 48, seed=0)
    out = tmp_path / "run"
    args = ["multimodal", "train", "--data-dir", scenes, "--output-dir", out, "--epochs", "1",
            "--encode-batch-size", "4", "--embed-dim", "16", "--val-fraction", "0.25"]

    def image_chunks() -> list:
        return sorted((out / "cache").glob("features_*.parts/images_*.npz"))

    proc = subprocess.Popen([sys.executable, "-m", "kitaeru", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint,
                            env={**os.environ, "KITAERU_NO_PROGRESS": "1"})
    try:
        wait_until(lambda: len(image_chunks()) >= 1, "the first batch of images was encoded and saved", proc=proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=guard())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    result = json.loads((out / "training_result.json").read_text())
    assert result["status"] == "interrupted" and result["epochs_completed"] == 0
    kept = image_chunks()
    assert 1 <= len(kept) < 12, "the interrupt should land while images are still being encoded"
    assert not list((out / "cache").glob("features_*.npz")), "no finished cache from an interrupted encoding"
    assert "Traceback" not in err
    command = err.split("resume with:", 1)[1].strip().splitlines()[0]
    assert result["resume_command"] == command

    resumed = cli(*shlex.split(command)[1:])
    assert resumed.exit_code == 0, resumed.stderr
    assert f"{len(kept)} encoded chunks kept" in resumed.stdout + resumed.stderr
    result = json.loads((out / "training_result.json").read_text())
    assert result["status"] == "completed" and result["features"]["reused_chunks"] >= len(kept)
    assert not list((out / "cache").glob("*.parts")), "the chunks are removed once the whole cache is written"

    # The kept chunks landed in their place: the cache's first rows are what a fresh encoder gives.
    from kitaeru.data.scenes import load_scene_folder
    from kitaeru.recipes.multimodal.features import EncoderSpec, FrozenEncoders, encode_scene_images

    with np.load(result["features"]["cache_file"]) as cache:
        cached_images = cache["image"]
    assert cached_images.shape[0] == 48
    spec = EncoderSpec("default", "torchvision:mobilenet_v2")
    first = load_scene_folder(str(scenes)).scenes[:4]
    _, fresh, _ = encode_scene_images(first, FrozenEncoders(spec).image, batch_size=4)
    np.testing.assert_allclose(cached_images[:4], fresh, rtol=1e-4, atol=1e-5)
