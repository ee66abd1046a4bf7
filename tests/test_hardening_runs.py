"""Crash evidence: a ``running`` run whose process is gone is reported ``died`` with its resume
command (``kitaeru runs``); results.csv never repeats or loses an epoch after a resume."""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys

from kitaeru.core.run import RunFolder, read_run_status


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write(run_dir, **fields):
    run_dir.mkdir(parents=True)
    (run_dir / "training_result.json").write_text(json.dumps(fields))


def test_running_run_with_a_gone_pid_is_died(tmp_path, cli):
    host = socket.gethostname()
    _write(tmp_path / "runs" / "killed", status="running", pid=_dead_pid(), host=host, recipe="docclass",
           epochs_completed=2, epochs_planned=5, resume_command="kitaeru docclass train --resume runs/killed")
    import os

    _write(tmp_path / "runs" / "live", status="running", pid=os.getpid(), host=host, recipe="lora")
    _write(tmp_path / "runs" / "elsewhere", status="running", pid=_dead_pid(), host="another-host", recipe="lora")
    _write(tmp_path / "runs" / "deep" / "done", status="completed", pid=1, host=host, recipe="multimodal")
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "training_result.json").write_text("{")

    assert read_run_status(tmp_path / "runs" / "killed")["status"] == "died"
    assert read_run_status(tmp_path / "runs" / "live")["status"] == "running"
    assert read_run_status(tmp_path / "runs" / "elsewhere")["status"] == "running"  # cannot tell from here
    assert read_run_status(tmp_path / "nothing") is None

    listed = cli("runs", "--runs", tmp_path / "runs", "--json")
    assert listed.exit_code == 0, listed.stderr
    by_name = {r["run"].rsplit("/", 1)[-1]: r for r in json.loads(listed.stdout)}
    assert set(by_name) == {"killed", "live", "elsewhere", "done", "broken"}
    assert by_name["killed"]["status"] == "died"
    assert by_name["killed"]["resume_command"] == "kitaeru docclass train --resume runs/killed"
    assert by_name["broken"]["status"] == "unreadable"
    died = cli("runs", "--runs", tmp_path / "runs", "--status", "died")
    assert died.exit_code == 0 and "killed" in died.stdout and "resume" in died.stdout and "live" not in died.stdout


def test_results_csv_never_repeats_or_loses_an_epoch_after_resume(tmp_path):
    run = RunFolder(tmp_path / "run", tensorboard=False)
    for epoch in (1, 2, 3):
        run.log_epoch({"epoch": epoch, "loss": 1.0 / epoch})
    run.flush()  # what the first process wrote is on disk before it ends
    # killed during epoch 3's validation, resumed from the epoch-2 checkpoint: epoch 3 is logged again
    resumed = RunFolder(tmp_path / "run", tensorboard=False)
    for epoch in (3, 4):
        resumed.log_epoch({"epoch": epoch, "loss": 0.5 / epoch})
    resumed.flush()
    with open(tmp_path / "run" / "results.csv", newline="") as fh:
        epochs = [int(r["epoch"]) for r in csv.DictReader(fh)]
    assert epochs == [1, 2, 3, 4]
