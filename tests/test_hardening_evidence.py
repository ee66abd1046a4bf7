"""Evidence that survives kills and full disks: an index saved in place is the old set or the new one
at any moment, a full disk is one line naming the path with nothing half-written left, and errors
from the machine's state (not bugs) are one-line exit-2 errors."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from guards import HANG_GUARD_S

from kitaeru.index.embeddings_io import EmbeddingInfo, make_table, write_parquet
from kitaeru.index.faiss_index import build_index, load_index, sidecar_paths

DIM = 16
INFO = EmbeddingInfo(model="timm:vit_tiny_patch16_224", pretrained="none", pool="mean", image_size=32,
                     resize="crop", normalized=True, dim=DIM, kind="image")


def _embeddings(path, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    write_parquet(make_table(x, [{"path": f"img_{seed}_{i}.jpg"} for i in range(n)], INFO), path)
    return str(path)


@pytest.fixture
def small_index(tmp_path):
    """An index of 30 vectors and an embeddings file of 20 more to add."""
    from kitaeru.cli import run

    first, more = _embeddings(tmp_path / "a.parquet", 30, 0), _embeddings(tmp_path / "b.parquet", 20, 1)
    index = tmp_path / "x.faiss"
    assert run(["index", "build", "--embeddings", first, "--index-out", str(index), "--type", "flat"]) == 0
    return index, more


def _consistent_size(index_path) -> int:
    loaded = load_index(index_path)
    assert loaded.ntotal == len(loaded.metadata) == loaded.info.ntotal
    return loaded.ntotal


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name.endswith(".commit"))


# ---- index add in place: old or new set, never a mix ------------------------------------------
@pytest.mark.parametrize("renames_done", [0, 1, 2])
def test_in_place_add_killed_between_renames_leaves_a_usable_index(small_index, renames_done):
    """kill -9 after 0, 1 or 2 of the three renames (a real process, really killed): the index then
    loads as the old 30 vectors or the new 50, its three files agreeing."""
    index, more = small_index
    script = textwrap.dedent(f"""
        import os, signal
        real = os.replace
        done = []
        def replace(src, dst):
            if str(dst).startswith({str(index.with_suffix(''))!r}) and not str(dst).endswith('.commit'):
                if len(done) == {renames_done}:
                    os.kill(os.getpid(), signal.SIGKILL)
                done.append(dst)
            return real(src, dst)
        os.replace = replace
        from kitaeru.cli import run
        run(["index", "add", "--index", {str(index)!r}, "--embeddings", {more!r}])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _consistent_size(index) == 50  # the journal was written before the first rename: rolled forward
    assert _leftovers(index.parent) == []


def test_in_place_add_killed_while_writing_keeps_the_old_index(small_index):
    """kill -9 while the new .faiss is being written (before the journal): the old 30 vectors load,
    and the next add clears the dead save's temporaries."""
    index, more = small_index
    script = textwrap.dedent(f"""
        import os, signal, faiss
        faiss.write_index = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        from kitaeru.cli import run
        run(["index", "add", "--index", {str(index)!r}, "--embeddings", {more!r}])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _consistent_size(index) == 30
    assert any(name.startswith(".x.index.parquet.") for name in _leftovers(index.parent))  # the dead save's
    from kitaeru.cli import run

    assert run(["index", "add", "--index", str(index), "--embeddings", more]) == 0
    assert _consistent_size(index) == 50 and _leftovers(index.parent) == []


def test_in_place_add_failing_before_its_journal_keeps_the_old_index(small_index, monkeypatch, cli):
    """A failure while the new files are written (here Faiss's writer) leaves the old set and no temporaries."""
    import faiss

    index, more = small_index
    before = {p.name: p.read_bytes() for p in sidecar_paths(index)}

    def broken(*_a, **_k):
        raise RuntimeError(f"Error in write: {os.strerror(errno.ENOSPC)}")

    monkeypatch.setattr(faiss, "write_index", broken)
    result = cli("index", "add", "--index", str(index), "--embeddings", more)
    assert result.exit_code == 2, result.stdout + result.stderr
    err = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error")]
    assert len(err) == 1 and str(index) in err[0] and "no space left on device" in err[0], err
    assert {p.name: p.read_bytes() for p in sidecar_paths(index)} == before
    assert _leftovers(index.parent) == []
    monkeypatch.undo()
    assert _consistent_size(index) == 30


def test_full_disk_in_index_build_leaves_nothing_half_written(tmp_path, monkeypatch, cli):
    import pyarrow.parquet as pq

    first = _embeddings(tmp_path / "a.parquet", 30, 0)
    out = tmp_path / "out" / "x.faiss"
    real = pq.write_table

    def full(table, where, *a, **k):
        if ".index.parquet" in str(where):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(table, where, *a, **k)

    monkeypatch.setattr(pq, "write_table", full)
    result = cli("index", "build", "--embeddings", first, "--index-out", str(out), "--type", "flat")
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error")]
    assert len(lines) == 1 and "x.index.parquet" in lines[0] and "no space left" in lines[0], lines
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no parquet without its .faiss, no .tmp


def test_a_save_journal_is_finished_by_the_next_load(tmp_path):
    """The roll-forward itself: a journal whose renames were not done is completed when loading."""
    rng = np.random.default_rng(0)
    old = build_index(rng.normal(size=(10, DIM)).astype(np.float32), index_type="flat", metric="l2")
    target = tmp_path / "y.faiss"
    old.save(target)
    new = build_index(rng.normal(size=(25, DIM)).astype(np.float32), index_type="flat", metric="l2")
    real = os.replace
    calls = []

    def stop_after_journal(src, dst):
        if str(dst).endswith(".commit"):
            real(src, dst)
            raise KeyboardInterrupt  # stopped right after the commit point
        calls.append(dst)
        return real(src, dst)

    os.replace = stop_after_journal
    try:
        with pytest.raises(KeyboardInterrupt):
            new.save(target)
    finally:
        os.replace = real
    assert not calls and (tmp_path / "y.index.commit").is_file()
    assert _consistent_size(target) == 25
    assert _leftovers(tmp_path) == []


# ---- the central one-line handler for the machine's state -------------------------------------
def test_unhandled_disk_errors_are_one_line_exit_2(monkeypatch, capsys):
    """An OSError of a full/read-only disk escaping a command: one line naming the file, exit 2."""
    from kitaeru import cli as cli_module
    from kitaeru.cli import run

    def full(*_a, **_k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/mnt/ro/out.json")

    monkeypatch.setattr(cli_module, "app", full)
    assert run(["anything"]) == 2
    err = capsys.readouterr()
    lines = (err.out + err.err).strip().splitlines()
    assert lines == ["error: /mnt/ro/out.json: read-only file system"], lines


def test_a_newline_in_a_path_still_prints_one_error_line(tmp_path, cli):
    weird = tmp_path / "a\nb.faiss"
    result = cli("index", "search", "--index", str(weird), "--text", "x")
    assert result.exit_code == 2
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "a\\nb.faiss" in lines[0], lines


# ---- detect: results.csv never misses an epoch the checkpoint holds ---------------------------
ULTRALYTICS_HEADER = ("epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),metrics/recall(B),"
                      "metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss,val/cls_loss,val/dfl_loss,lr/pg0,lr/pg1,lr/pg2")


def test_resume_restores_the_epoch_results_csv_missed(tmp_path):
    """Interrupted after Ultralytics saved epoch 5 (its CSV row and last.pt) but before our row was
    written: the resume (start_epoch 5) puts epoch 5 back into results.csv from Ultralytics' numbers,
    and epoch 6 (logged by the checkpoint-less attempt) is cut from Ultralytics' CSV as before."""
    from types import SimpleNamespace

    from kitaeru.core.run import RunFolder
    from kitaeru.recipes.detect.evidence import ULTRALYTICS_CSV, Attempt, EvidenceCallbacks, TrainingState

    run_dir = tmp_path / "run"
    run = RunFolder(run_dir, tensorboard=False)
    for epoch in range(1, 5):
        run.log_epoch({"epoch": epoch, "seconds": 1.5, "box_loss": 1.0 / epoch, "mAP50": 0.1 * epoch, "lr": 0.01})
    run.flush()
    lines = [ULTRALYTICS_HEADER] + [f"{e},{1.5 * e},{1.0 / e},2,3,0.5,0.4,{0.1 * e},{0.05 * e},1,2,3,0.01,0.01,0.01"
                                    for e in range(1, 7)]
    (run_dir / ULTRALYTICS_CSV).write_text("\n".join(lines) + "\n")

    resumed = RunFolder(run_dir, tensorboard=False)
    state = TrainingState(attempts=[Attempt(number=1, mode="resume", plan={})], dataset_check={})
    callbacks = EvidenceCallbacks(resumed, state)
    callbacks.on_pretrain_routine_end(SimpleNamespace(save_dir=str(run_dir), start_epoch=5))
    resumed.flush()
    rows = RunFolder(run_dir, tensorboard=False).read_results()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    five = rows[-1]
    assert five["mAP50"] == pytest.approx(0.5) and five["box_loss"] == pytest.approx(0.2)
    assert five["seconds"] == pytest.approx(1.5) and five["lr"] == pytest.approx(0.01)
    assert five["val_box_loss"] == pytest.approx(1.0) and five["mAP50-95"] == pytest.approx(0.25)
    assert (run_dir / ULTRALYTICS_CSV).read_text().count("\n") == 6  # header + epochs 1-5


# ---- full disk: the run's picture and the sample scenes ----------------------------------------
def _disk_full_on(monkeypatch, module, name: str, when=lambda *a, **k: True):
    real = getattr(module, name)

    def full(*args, **kwargs):
        if when(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, full)


def test_full_disk_while_drawing_results_png_leaves_no_temporary_file(tmp_path, monkeypatch):
    from PIL import Image

    from kitaeru.core.errors import OutputError
    from kitaeru.core.plots import write_results_png

    (tmp_path / "results.csv").write_text("epoch,loss\n1,0.9\n2,0.5\n3,0.4\n")

    def save_then_fail(self, fp, *a, **k):
        open(fp, "wb").write(b"\x89PNG half")  # part of the file is on disk when the disk fills
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", save_then_fail)
    with pytest.raises(OutputError, match=r"results\.png: cannot write \(no space left on device\)"):
        write_results_png(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_full_disk_in_sample_scenes_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch, cli):
    from kitaeru.core import storage

    out = tmp_path / "scenes"
    written = []
    # the disk fills after a few files: images are already in the new folder, the metadata is not
    _disk_full_on(monkeypatch, storage.Path, "write_bytes", lambda self, data: written.append(self) or len(written) > 5)
    result = cli("sample", "scenes", "--out", str(out), "--num-scenes", "8")
    assert result.exit_code == 2, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error")]
    assert len(lines) == 1 and str(out) in lines[0] and "no space left on device" in lines[0], lines
    assert not out.exists()  # no folder without scenes_metadata.json
    assert list(tmp_path.iterdir()) == []

    # an existing folder keeps what it had, and only that
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    written.clear()
    assert cli("sample", "scenes", "--out", str(out), "--num-scenes", "8").exit_code == 2
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["mine.txt"]


# ---- kitaeru runs: a pid that is not the run's process is not "running" ------------------------
def test_runs_does_not_take_pid_minus_one_or_a_reused_pid_for_a_running_run(tmp_path):
    import json
    import socket
    from datetime import datetime, timedelta

    from kitaeru.recipes.runs import RunsConfig, runs

    now = datetime.now()
    cases = {
        "minus-one": (-1, now),
        "zero": (0, now),
        # this test's own process, alive, but it started long after the run did: a reused pid
        "reused": (os.getpid(), now - timedelta(days=30)),
        "mine": (os.getpid(), now + timedelta(seconds=5)),  # the process that really runs it
    }
    for name, (pid, started) in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "training_result.json").write_text(json.dumps({
            "status": "running", "pid": pid, "host": socket.gethostname(), "recipe": "detect",
            "started_at": started.isoformat(timespec="seconds")}))
    found = {os.path.basename(r["run"]): r["status"] for r in runs(RunsConfig(runs=str(tmp_path)))}
    assert found == {"minus-one": "died", "zero": "died", "reused": "died", "mine": "running"}


def test_resume_over_damaged_evidence_is_a_one_line_error(tmp_path):
    """Binary garbage in results.csv / training_result.json: a DataError naming the file (the CLI's
    one line, exit 2), not a UnicodeDecodeError."""
    from kitaeru.core.errors import DataError
    from kitaeru.core.run import RunFolder

    bad_csv = tmp_path / "a"
    bad_csv.mkdir()
    (bad_csv / "results.csv").write_bytes(b"epoch,loss\n1,\xff\xfe\x00\x81garbage\n")
    with pytest.raises(DataError, match=r"results\.csv: not a readable results\.csv"):
        RunFolder(bad_csv, tensorboard=False)
    bad_json = tmp_path / "b"
    bad_json.mkdir()
    (bad_json / "training_result.json").write_bytes(b"\x80\x81\x82{}")
    with pytest.raises(DataError, match=r"training_result\.json: not UTF-8"):
        RunFolder(bad_json, tensorboard=False).read_result()
    (bad_json / "training_result.json").write_text("[]")
    with pytest.raises(DataError, match="not a run record"):
        RunFolder(bad_json, tensorboard=False).read_result()


# ---- detect: one line, exit 2, before any model (and without Ultralytics' first-run notice) -----
@pytest.fixture
def coco8(tmp_path, shared_data):
    import shutil

    target = tmp_path / "coco8"
    shutil.copytree(shared_data / "coco8", target)  # Ultralytics writes label caches beside the labels
    return target


def _alone(result) -> str:
    """The output is exactly one line, the error (nothing printed before it)."""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert result.exit_code == 2, result
    return lines[0]


@pytest.mark.slow
def test_detect_errors_come_alone_where_ultralytics_never_ran(tmp_path, coco8, cli_subprocess):
    """A fresh YOLO_CONFIG_DIR (Ultralytics never ran here): its "Creating new Ultralytics Settings"
    notice is not printed before the error of a checkpoint that names code."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo PAYLOAD-RAN",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Payload()}))
    env = {"YOLO_CONFIG_DIR": str(tmp_path / "fresh-ultralytics")}
    line = _alone(cli_subprocess("detect", "predict", "--model", evil, "--source", coco8 / "images" / "val",
                                 "--device", "cpu", "--output-dir", tmp_path / "out", env=env))
    assert "evil.pt" in line and "PAYLOAD-RAN" not in line


@pytest.mark.slow
def test_detect_mistakes_are_one_line_before_any_model(tmp_path, coco8, cli_subprocess):
    env = {"YOLO_CONFIG_DIR": str(tmp_path / "fresh-ultralytics")}
    out = tmp_path / "out"
    # a split the data.yaml does not have
    line = _alone(cli_subprocess("detect", "val", "--model", "yolov8n.yaml", "--data", coco8 / "data.yaml",
                                 "--split", "test", "--device", "cpu", "--output-dir", out, env=env))
    assert "--split test" in line and "has no 'test' split" in line and "train, val" in line
    # an .onnx that is not one
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(os.urandom(4096))
    line = _alone(cli_subprocess("detect", "predict", "--model", garbage, "--source", coco8 / "images" / "val",
                                 "--device", "cpu", "--output-dir", out, env=env))
    assert "model.onnx: not a loadable ONNX model" in line
    # a model YAML with a python tag: refused as data, nothing run, no run folder, no TensorBoard
    evil = tmp_path / "evil.yaml"
    evil.write_text('nc: 80\nbackbone: !!python/object/apply:os.system ["echo PAYLOAD-RAN"]\nhead: []\n')
    for mode in ("train", "val"):
        result = cli_subprocess("detect", mode, "--model", evil, "--data", coco8 / "data.yaml", "--epochs", "1",
                                "--device", "cpu", "--output-dir", out, env=env) if mode == "train" else \
            cli_subprocess("detect", mode, "--model", evil, "--data", coco8 / "data.yaml", "--device", "cpu",
                           "--output-dir", out, env=env)
        line = _alone(result)
        assert "evil.yaml: not a plain YAML model description" in line and "PAYLOAD-RAN" not in result.stdout
    assert not out.exists()
