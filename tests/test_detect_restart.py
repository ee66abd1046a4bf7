"""detect: Ctrl-C before the first epoch ends leaves no weights/last.pt to resume from, so the run
prints (and records, for ``kitaeru runs``) the command that starts the same run again, said so,
and that command really runs it, in the same folder."""

from __future__ import annotations

import json
import shlex

import pytest
from detect_helpers import copy_coco8

pytestmark = pytest.mark.slow


def test_ctrl_c_in_the_first_epoch_prints_a_command_that_starts_the_run_again(tmp_path, shared_data, cli):
    from kitaeru.core.config import load_config
    from kitaeru.core.errors import RunInterrupted
    from kitaeru.recipes.detect.config import TrainConfig
    from kitaeru.recipes.detect.training import train_detector

    data = copy_coco8(shared_data, tmp_path / "data")
    out = tmp_path / "runs"

    def ctrl_c_in_epoch_1(trainer):
        raise KeyboardInterrupt  # what SIGINT raises, before the first epoch (and its last.pt) ends

    config = load_config(TrainConfig, "detect", overrides={
        "data_dir": str(data), "output_dir": str(out), "model": "yolov8n.yaml", "epochs": 1, "image_size": 64,
        "batch_size": 4, "tensorboard": False, "device": "cpu",
    })
    with pytest.raises(RunInterrupted) as stopped:
        train_detector(config, callbacks={"on_train_epoch_start": [ctrl_c_in_epoch_1]})
    message = str(stopped.value)
    assert "no checkpoint to resume" in message and "start the same run again with: " in message
    command = message.split("start the same run again with: ", 1)[1]
    run_dir = out / "train"
    assert not (run_dir / "weights" / "last.pt").exists()
    before = json.loads((run_dir / "training_result.json").read_text())
    assert before["status"] == "interrupted" and before["resume_command"] == command
    assert "--resume" not in command

    listed = cli("runs", "--runs", out, "--json")
    assert listed.exit_code == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["status"] == "interrupted" and row["resume_command"] == command

    dead = cli("detect", "train", "--resume", run_dir)  # what users try first: pointed to the same command
    assert dead.exit_code == 2 and command in dead.stderr

    again = cli(*shlex.split(command)[1:])
    assert again.exit_code == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["train"]  # the same run, not train2
    after = json.loads((run_dir / "training_result.json").read_text())
    assert after["status"] == "completed" and after["epochs_completed"] == 1
    assert after["resume_command"] == f"kitaeru detect train --resume {run_dir}"  # a checkpoint exists now
