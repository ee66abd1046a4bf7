"""The one run lifecycle: running → completed / failed / interrupted, heartbeat, used folders."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from kitaeru.core.errors import ConfigError, DataError, RunInterrupted
from kitaeru.core.run import RunFolder, holds_run, next_run_dir, refuse_used_run_dir


def _result(run: RunFolder) -> dict:
    return json.loads(run.result_json.read_text())


def test_running_from_the_first_second_then_completed(tmp_path):
    run = RunFolder(tmp_path / "r", tensorboard=False)
    with run.lifecycle(resume_command="kitaeru toy train --resume r", recipe="toy", epochs_planned=2):
        first = _result(run)
        assert first["status"] == "running"
        assert first["pid"] == os.getpid() and first["host"] and first["heartbeat_at"]
        assert first["recipe"] == "toy" and first["epochs_planned"] == 2
        run.log_epoch({"epoch": 1, "loss": 0.5})
        run.flush()  # results.csv and the heartbeat are written in the background
        assert _result(run)["epochs_completed"] == 1  # the heartbeat refreshes the running record
        assert run.read_results() == [{"epoch": 1, "loss": 0.5}]
    done = _result(run)
    assert done["status"] == "completed" and done["finished_at"] and done["recipe"] == "toy"


def test_a_final_status_written_by_the_body_is_kept(tmp_path):
    run = RunFolder(tmp_path / "r", tensorboard=False)
    with run.lifecycle(resume_command="x"):
        run.write_result("completed", metrics={"auroc": 0.9})
    assert _result(run)["metrics"] == {"auroc": 0.9}


def test_ctrl_c_is_interrupted_with_the_resume_command(tmp_path):
    run = RunFolder(tmp_path / "r", tensorboard=False)
    with pytest.raises(RunInterrupted) as caught:
        with run.lifecycle(resume_command="kitaeru toy train --resume r"):
            raise KeyboardInterrupt
    assert caught.value.exit_code == 130
    assert "resume with: kitaeru toy train --resume r" in str(caught.value)
    assert _result(run)["status"] == "interrupted"


def test_sigterm_is_an_interruption_too(tmp_path):
    run = RunFolder(tmp_path / "r", tensorboard=False)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RunInterrupted):
        with run.lifecycle(resume_command="again"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this at once
    assert _result(run)["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is before  # handler restored


def test_errors_are_failed_with_the_one_line_message(tmp_path):
    run = RunFolder(tmp_path / "r", tensorboard=False)
    with pytest.raises(DataError):
        with run.lifecycle(resume_command="x"):
            raise DataError("images/a.png: not an image")
    failed = _result(run)
    assert failed["status"] == "failed" and failed["error"] == "images/a.png: not an image"
    run2 = RunFolder(tmp_path / "r2", tensorboard=False)
    with pytest.raises(ZeroDivisionError):
        with run2.lifecycle(resume_command="x"):
            1 / 0
    assert _result(run2)["error"].startswith("ZeroDivisionError: ")


def test_used_folders_are_refused_and_names_increment(tmp_path):
    assert next_run_dir(tmp_path, "train") == tmp_path / "train"
    (tmp_path / "train").mkdir()
    assert next_run_dir(tmp_path, "train") == tmp_path / "train"  # empty: reuse
    (tmp_path / "train" / "training_result.json").write_text("{}")
    assert next_run_dir(tmp_path, "train") == tmp_path / "train2"
    assert holds_run(tmp_path / "train")
    with pytest.raises(ConfigError, match="--resume.*--exist-ok"):
        refuse_used_run_dir(tmp_path / "train")
    refuse_used_run_dir(tmp_path / "train", exist_ok=True)
    weights_only = tmp_path / "w"
    (weights_only / "weights").mkdir(parents=True)
    (weights_only / "weights" / "last.pt").write_bytes(b"x")
    with pytest.raises(ConfigError):
        refuse_used_run_dir(weights_only)
    refuse_used_run_dir(tmp_path / "fresh")


def _slow_drawings(monkeypatch) -> list[int]:
    """Make every results.png drawing slow (so the lifecycle has to wait for one started early) and
    record how many rows each one drew."""
    from kitaeru.core import plots

    real, drawn = plots.write_results_png, []

    def slow(run_dir):
        rows = len(plots.read_results_csv(os.path.join(run_dir, "results.csv"))[1])
        time.sleep(0.3)
        out = real(run_dir)
        drawn.append(rows)
        return out

    monkeypatch.setattr(plots, "write_results_png", slow)
    return drawn


def _complete_png(run: RunFolder) -> bool:
    from PIL import Image

    with Image.open(run.path / "results.png") as image:
        image.load()  # every byte there and decodable
    return (run.path / "results.png").stat().st_size > 5_000 and not list(run.path.glob(".results.png*"))


def test_results_png_started_early_is_complete_when_the_lifecycle_ends(tmp_path, monkeypatch):
    drawn = _slow_drawings(monkeypatch)
    run = RunFolder(tmp_path / "r", tensorboard=False)
    with run.lifecycle(resume_command="x"):
        run.log_epoch({"epoch": 1, "loss": 1.0})
        run.log_epoch({"epoch": 2, "loss": 0.5})
        run.start_results_png()  # the last epoch is logged; the body still has work to do
    assert drawn == [2]  # drawn once, in the background, and waited for
    assert _complete_png(run)


def test_results_png_started_early_is_redrawn_when_an_epoch_follows(tmp_path, monkeypatch):
    drawn = _slow_drawings(monkeypatch)
    run = RunFolder(tmp_path / "r", tensorboard=False)
    with run.lifecycle(resume_command="x"):
        run.log_epoch({"epoch": 1, "loss": 1.0})
        run.start_results_png()
        run.log_epoch({"epoch": 2, "loss": 0.5})  # e.g. a retry that trained on
    assert len(drawn) == 2 and drawn[-1] == 2
    assert _complete_png(run)


def test_results_png_started_early_is_complete_after_an_interruption(tmp_path, monkeypatch):
    drawn = _slow_drawings(monkeypatch)
    run = RunFolder(tmp_path / "r", tensorboard=False)
    with pytest.raises(RunInterrupted):
        with run.lifecycle(resume_command="x"):
            run.log_epoch({"epoch": 1, "loss": 1.0})
            run.start_results_png()
            raise KeyboardInterrupt
    assert _result(run)["status"] == "interrupted"
    assert drawn == [1] and _complete_png(run)


def test_a_failed_early_drawing_is_retried_then_only_a_warning(tmp_path, capsys):
    run = RunFolder(tmp_path / "r", tensorboard=False)
    with run.lifecycle(resume_command="x"):
        run.log_epoch({"epoch": 1, "loss": 1.0})
        (run.path / "results.png").mkdir()  # the PNG cannot be written where a folder stands
        run.start_results_png()
    assert _result(run)["status"] == "completed"
    assert "results.png: not drawn" in capsys.readouterr().err


def test_background_evidence_keeps_the_newest_version_and_raises_a_failed_write(tmp_path, monkeypatch):
    from kitaeru.core import storage

    writer = storage.BackgroundWriter()
    target = tmp_path / "results.csv"
    for i in range(50):
        writer.submit(target, f"version {i}\n")
    writer.flush()
    assert target.read_text() == "version 49\n" and [p.name for p in tmp_path.iterdir()] == ["results.csv"]

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "atomic_write_text", full_disk)
    writer.submit(target, "lost\n")
    with pytest.raises(OSError, match="No space left"):
        writer.flush()
    writer.flush()  # raised once
    assert target.read_text() == "version 49\n"


def test_a_final_status_lands_after_every_heartbeat(tmp_path):
    run = RunFolder(tmp_path / "r", tensorboard=False)
    with run.lifecycle(resume_command="x", recipe="toy"):
        for epoch in range(1, 21):
            run.log_epoch({"epoch": epoch, "loss": 1 / epoch})
    assert _result(run)["status"] == "completed" and _result(run)["epochs_completed"] == 20
    assert len(run.read_results()) == 20 and (tmp_path / "r" / "results.png").is_file()
    assert not [t for t in threading.enumerate() if t.name == "evidence-writer"]
