"""Run evidence, atomic writes and fsspec storage."""

from __future__ import annotations

import csv
import json
import os

import fsspec
import pytest

from kitaeru.core.config import RecipeConfig
from kitaeru.core.errors import DataError, KitaeruError
from kitaeru.core.run import RunFolder, timestamped_dir
from kitaeru.core.storage import (
    atomic_path,
    atomic_write_json,
    list_files,
    local_copy,
    open_input,
    read_json,
)
from kitaeru.core.remote import output_dir


class Cfg(RecipeConfig):
    epochs: int = 3


def test_run_folder_evidence(tmp_path):
    with RunFolder(tmp_path / "run") as run:
        run.save_config(Cfg())
        run.log_epoch({"epoch": 0, "R@5": 0.1})
        run.log_epoch({"epoch": 1, "seconds": 0.5, "loss": 1.25, "R@5": 0.4, "lr": 1e-4})
        run.log_epoch({"epoch": 2, "seconds": 0.4, "loss": 0.75, "R@5": 0.6, "lr": 1e-4})
        run.record_skipped([{"path": "bad.jpg", "reason": "truncated"}])
        run.write_result("completed", metrics={"R@5": 0.6})
    rows = list(csv.DictReader(open(tmp_path / "run" / "results.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert list(rows[0])[0] == "epoch" and float(rows[2]["loss"]) == 0.75
    result = json.loads((tmp_path / "run" / "training_result.json").read_text())
    assert result["status"] == "completed"
    assert result["epochs_completed"] == 2
    assert result["skipped_inputs"] == {"count": 1, "items": [{"path": "bad.jpg", "reason": "truncated"}]}
    assert "torch" in result["library_versions"] and result["wall_time_seconds"] >= 0
    assert "epochs: 3" in (tmp_path / "run" / "config.yaml").read_text()
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_resumed_run_continues_results(tmp_path):
    RunFolder(tmp_path, tensorboard=False).log_epoch({"epoch": 1, "loss": 2.0})
    run = RunFolder(tmp_path, tensorboard=False)
    run.log_epoch({"epoch": 1, "loss": 1.5})  # re-logged epoch replaces the row
    run.log_epoch({"epoch": 2, "loss": 1.0})
    assert [(r["epoch"], r["loss"]) for r in run.read_results()] == [(1, 1.5), (2, 1.0)]


def test_timestamped_dir_is_unique(tmp_path):
    first = timestamped_dir(tmp_path, "competition")
    first.mkdir()
    second = timestamped_dir(tmp_path, "competition")
    assert first != second and first.name.startswith("competition_")


def test_atomic_path_keeps_old_file_on_crash(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_read_json_errors(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"a": 1,,}')
    with pytest.raises(DataError, match=r"x.json: not valid JSON \(line 1"):
        read_json(bad)
    with pytest.raises(DataError, match="not found"):
        read_json(tmp_path / "none.json")


def test_memory_filesystem_inputs_and_outputs(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/imgs/a.jpg", b"1")
    fs.pipe("/bucket/imgs/sub/b.PNG", b"2")
    fs.pipe("/bucket/imgs/notes.txt", b"3")
    files = list_files("memory://bucket/imgs")
    assert files == ["memory:///bucket/imgs/a.jpg", "memory:///bucket/imgs/sub/b.PNG"]
    with open_input(files[0]) as fh:
        assert fh.read() == b"1"
    with local_copy(files[1]) as local:
        assert local.read_bytes() == b"2"
    with output_dir("memory://bucket/out") as out:
        (out / "weights").mkdir()
        (out / "weights" / "w.pt").write_bytes(b"w")
        (out / "r.json").write_text("{}")
    assert fs.cat("/bucket/out/weights/w.pt") == b"w"
    assert fs.exists("/bucket/out/r.json")
    with pytest.raises(DataError):
        list_files("memory://bucket/nothing")


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KitaeruError, match="cannot create output folder"):
        with output_dir(blocker / "sub"):
            pass
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(KitaeruError, match="not writable"):
            with output_dir(ro):
                pass
