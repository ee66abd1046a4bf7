"""``--report-to wandb`` in W&B's offline mode, read back from the offline run's own record file.

W&B keeps an offline run in ``<run>/wandb/offline-run-*/run-<id>.wandb``: W&B's protobuf records
(``wandb.proto.wandb_internal_pb2.Record``) in LevelDB's log framing, the file ``wandb sync`` uploads.
The test reads it with W&B's own record classes and checks it holds what results.csv holds. The same
run also reports to ``csv`` (Lightning's CSVLogger) and is checked there too.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

wandb = pytest.importorskip("wandb")

BLOCK = 32768  # LevelDB log block size
FULL, LAST = 1, 4  # record types that end a record


def wandb_records(path: Path):
    """Every record of an offline ``.wandb`` file, as W&B's own protobuf ``Record`` objects."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B record file"
    pos, pending = 7, b""  # after the file header: ":W&B", a 2-byte magic and a version byte
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a record header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:  # zero padding up to the next block
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _items(updates) -> dict:
    return {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in updates}


@pytest.mark.slow
def test_docclass_offline_wandb_run_holds_the_results(cli, tmp_path, monkeypatch):
    from kitaeru.recipes.docclass.sample_documents import generate_documents

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "doc-types")  # the standard variable names the project
    monkeypatch.setenv("KITAERU_NO_PROGRESS", "1")
    generate_documents(tmp_path / "pool", 3, seed=11, kinds=["id_card", "passport", "form"])
    r = cli("docclass", "train", "--cfg-name", "cpu_quickstart", "--data-dir", tmp_path / "pool",
            "--output-dir", tmp_path / "runs", "--workers", "0", "--epochs", "2", "data.train_samples_per_class=16",
            "--report-to", "wandb,csv", "--json")
    assert r.exit_code == 0, r.stderr
    printed = json.loads(r.stdout)  # W&B's console output stays off stdout
    [run_dir] = (tmp_path / "runs").iterdir()
    run_id = json.loads((run_dir / "tracking.json").read_text())["runs"]["wandb"]
    assert printed["tracking"] == [{"backend": "wandb", "run_id": run_id, "url": None, "experiment": "doc-types", "error": None}]

    wandb.teardown()  # W&B's service finishes writing the record file when it stops (at exit for the CLI)
    [record_file] = run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb")
    records = list(wandb_records(record_file))
    kinds = [r.WhichOneof("record_type") for r in records]
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    config = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config.update(_items(r.config.update))
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    rows = read_csv(run_dir / "results.csv")
    for column in (c for c in rows[0] if c != "epoch"):
        want = [(int(row["epoch"]), float(row[column])) for row in rows if row[column] != ""]
        got = [(h["trainer/global_step"], h[column]) for h in history if column in h]
        assert [s for s, _ in got] == [s for s, _ in want], column
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-5), column
    assert config["optim.learning_rate"] == 0.003 and config["train.epochs"] == 2 and config["name"] == "cpu_quickstart"
    assert summary["status"] == "completed"
    [exit_record] = [r for r in records if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit.exit_code == 0
    tags = set(next(r.run.tags for r in records if r.WhichOneof("record_type") == "run"))
    assert {"recipe:docclass", "mode:train"} <= tags
    artifacts = {r.artifact.name: r.artifact for r in records if r.WhichOneof("record_type") == "artifact"}
    assert set(artifacts) == {f"evidence-{run_id}", f"weights-{run_id}"} and "exit" in kinds
    evidence = {entry.path for entry in artifacts[f"evidence-{run_id}"].manifest.contents}
    assert {"config.yaml", "results.csv", "training_result.json", "results.png"} <= evidence
    assert "best.ckpt" in {entry.path for entry in artifacts[f"weights-{run_id}"].manifest.contents}

    # csv: Lightning's CSVLogger beside results.csv, with the same numbers at the same steps
    logged = read_csv(run_dir / "csv_logs" / "metrics.csv")
    for row in rows:
        [same] = [m for m in logged if m["step"] == row["epoch"]]
        assert float(same["val_auroc"]) == pytest.approx(float(row["val_auroc"]), rel=1e-5)
    assert "optim.learning_rate" in (run_dir / "csv_logs" / "hparams.yaml").read_text()


@pytest.mark.slow
def test_resumed_run_continues_the_same_wandb_run(tmp_path, monkeypatch):
    """Interrupted (W&B exit code 130), then resumed: the same W&B run id (``id=`` + ``resume="allow"``)."""
    from guards import run_python

    from kitaeru.core.errors import RunInterrupted
    from kitaeru.core.run import RunFolder
    from kitaeru.core.tracking import TrackingSettings, attach_reporter

    monkeypatch.setenv("WANDB_MODE", "offline")
    settings = TrackingSettings(report_to="wandb", experiment="resume-check")
    run = RunFolder(tmp_path / "run", tensorboard=False)
    attach_reporter(run, settings, settings, recipe="demo")
    with pytest.raises(RunInterrupted):
        with run.lifecycle(resume_command="kitaeru demo train --resume run", recipe="demo"):
            run.log_epoch({"epoch": 1, "loss": 0.5})
            raise KeyboardInterrupt
    run_id = json.loads((tmp_path / "run" / "tracking.json").read_text())["runs"]["wandb"]
    wandb.teardown()  # W&B's service finishes writing the record file when it stops (at exit for the CLI)

    # the resume, as a user's --resume is: a new process, the same run folder
    resumed = run_python(f"""
from kitaeru.core.run import RunFolder
from kitaeru.core.tracking import TrackingSettings, attach_reporter
again = RunFolder({str(tmp_path / "run")!r}, tensorboard=False)
attach_reporter(again, TrackingSettings(), TrackingSettings(experiment="resume-check"), recipe="demo", resume=True)
with again.lifecycle(resume_command="kitaeru demo train --resume run", recipe="demo"):
    again.log_epoch({{"epoch": 2, "loss": 0.25}})
""", env={"WANDB_MODE": "offline"})
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((tmp_path / "run" / "training_result.json").read_text())
    assert [link["run_id"] for link in result["tracking"]] == [run_id] and result["status"] == "completed"

    files = sorted((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 2  # one offline segment per process start, both of the same W&B run
    exits, losses = [], []
    for path in files:
        records = list(wandb_records(path))
        exits += [r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit"]
        losses += [(h["trainer/global_step"], h["loss"]) for h in
                   (_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history") if "loss" in h]
    assert exits == [130, 0] and losses == [(1, 0.5), (2, 0.25)]
