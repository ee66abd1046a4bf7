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


# ---- run folders stay inside their output folder; a run that failed on its inputs blocks nothing -----
def test_run_names_cannot_leave_the_output_folder(tmp_path):
    import pytest

    from kitaeru.core.errors import ConfigError
    from kitaeru.core.run import next_run_dir, run_dir_under

    root = tmp_path / "runs"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")  # a name that is a link out of the folder
    assert run_dir_under(root, "ok") == root / "ok"
    for name in ("../x", "..", "a/b", "/abs", "", "link"):
        with pytest.raises(ConfigError, match="--run-name"):
            run_dir_under(root, name)
    with pytest.raises(ConfigError, match="--name"):
        next_run_dir(root, "../../x")


def test_shared_name_type_refuses_paths_at_the_schema():
    import pytest
    from pydantic import ValidationError

    from kitaeru.recipes.detect.config import TrainConfig as DetectTrain
    from kitaeru.recipes.docclass.config import TrainConfig as DocTrain

    assert DocTrain(run_name="exp-1").run_name == "exp-1"
    for bad in ("../../x", "a/b", "..", " x", "a\\b"):
        with pytest.raises(ValidationError):
            DocTrain(run_name=bad)
        with pytest.raises(ValidationError):
            DocTrain(name=bad)
        with pytest.raises(ValidationError):
            DetectTrain(run_prefix=bad)


def test_a_run_that_failed_before_its_first_epoch_does_not_block_the_rerun(tmp_path):
    import pytest

    from kitaeru.core.errors import ConfigError, DataError
    from kitaeru.core.run import holds_run, refuse_used_run_dir

    run = RunFolder(tmp_path / "failed", tensorboard=False)
    with pytest.raises(DataError):
        with run.lifecycle(resume_command="x"):
            raise DataError("pool: none of the images could be read")
    assert json.loads((tmp_path / "failed" / "training_result.json").read_text())["status"] == "failed"
    assert not holds_run(tmp_path / "failed")
    refuse_used_run_dir(tmp_path / "failed")  # the corrected re-run may use the folder

    trained = RunFolder(tmp_path / "trained", tensorboard=False)
    with pytest.raises(RuntimeError):
        with trained.lifecycle(resume_command="x"):
            trained.log_epoch({"epoch": 1, "loss": 0.5})
            raise RuntimeError("diverged")
    with_weights = RunFolder(tmp_path / "weighted", tensorboard=False)
    (with_weights.weights_dir / "last.ckpt").write_bytes(b"w")
    with_weights.write_result("failed", epochs_completed=0)
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "training_result.json").write_text("{")
    for kept in ("trained", "weighted", "unreadable"):  # evidence worth keeping is still protected
        assert holds_run(tmp_path / kept)
        with pytest.raises(ConfigError, match="already holds a run"):
            refuse_used_run_dir(tmp_path / kept)


# ---- outputs that cannot be written are refused before any work, even for root ----------------------
def test_output_checks_try_a_write_instead_of_asking_os_access(tmp_path, monkeypatch):
    import errno
    import os
    import tempfile

    import pytest

    from kitaeru.core.errors import KitaeruError
    from kitaeru.core.storage import check_output_path

    (tmp_path / "afile").write_text("x")
    for path, expected in (("/proc/kitaeru/out.png", "/proc is a kernel file system"),
                           ("/sys/kitaeru", "/sys is a kernel file system"),
                           (tmp_path / "afile" / "deeper" / "x.png", "is a file, not a folder")):
        with pytest.raises(KitaeruError, match=expected):
            check_output_path(path, setting="--out")
    check_output_path(tmp_path / "new" / "deeper" / "x.png", setting="--out")
    assert sorted(os.listdir(tmp_path)) == ["afile"], "the probe file must be removed again"

    def read_only(*args, **kwargs):  # what a read-only mount answers, which os.access hides from root
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "access", lambda *a, **k: True)
    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(KitaeruError, match=r"--out-dir .*not writable \(read-only file system\)"):
        check_output_path(tmp_path / "runs", setting="--out-dir", kind="dir")
