"""``kitaeru multimodal train`` as one shape: generated options (aliases, key=value, --print-config,
--json), cheap checks first, the run lifecycle (Ctrl-C → exit 130 + resume command → resumed to
completion) and refusal of a used output folder.

One small generated scene set is encoded once per module; the other runs reuse its feature cache.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shlex

import pytest
from guards import kitaeru_with_import_probe
from multimodal_helpers import seed_cache

from kitaeru.recipes.multimodal.sample_scenes import write_sample_scenes

SMALL = ["--embed-dim", "16", "--val-fraction", "0.25"]


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    return write_sample_scenes(tmp_path_factory.mktemp("scenes") / "scenes", 16, seed=5)


@pytest.fixture(scope="module")
def quick_run(scene_dir, tmp_path_factory):
    """One real run spelled with the guides' aliases and a key=value override, its --json captured."""
    from kitaeru.cli import run

    out = tmp_path_factory.mktemp("quick") / "out"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = run(["multimodal", "train", "-d", str(scene_dir), "--output", str(out), "--lr", "0.01", "--batch", "4",
                    "epochs=2", "--set", "seed=3", "--json", *SMALL])
    assert code == 0
    return {"out": out, "json": json.loads(stdout.getvalue())}


def _result(out) -> dict:
    return json.loads((out / "training_result.json").read_text(encoding="utf-8"))


def _rows(out) -> list[dict]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow  # uses the module's one training run
def test_aliases_overrides_and_json(quick_run):
    out, printed = quick_run["out"], quick_run["json"]
    assert printed["status"] == "completed" and printed["epochs_completed"] == 2  # epochs=2 (key=value)
    assert printed["recipe"] == "multimodal" and printed["epochs_planned"] == 2
    assert printed["resume_command"] == f"kitaeru multimodal train --resume {out}"
    assert printed["best_weights"] and printed["last_weights"].endswith("last.ckpt") and "recall_mean" in printed["metrics"]
    assert printed == _result(out)  # --json prints the run's result, nothing else on stdout
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    # the evidence format's column order (a column named "seconds" records each epoch's duration;
    # nothing here compares a duration with a limit)
    assert list(rows[0])[:3] == ["epoch", "seconds", "train_loss"] and {"lr", "temperature", "t2i_R@5"} <= set(rows[0])
    assert all(float(r["lr"]) == pytest.approx(0.01) for r in rows)  # --lr
    config = (out / "config.yaml").read_text()
    assert "learning_rate: 0.01" in config and "batch_size: 4" in config and "seed: 3" in config and "epochs: 2" in config


def test_print_config_resolves_preset_flags_and_overrides(cli, tmp_path):
    r = cli("multimodal", "train", "--use-sample-data", "--cfg-name", "quick", "--lr", "0.003", "epochs=1",
            "--set", "batch=8", "--print-config")
    assert r.exit_code == 0, r.stderr
    assert "sample_scenes: 120" in r.stdout  # the preset
    assert "learning_rate: 0.003" in r.stdout and "epochs: 1" in r.stdout and "batch_size: 8" in r.stdout
    r = cli("multimodal", "train", "--use-sample-data", "epoch=3", "--print-config")
    assert r.exit_code == 2 and "did you mean epochs" in r.stderr


@pytest.mark.slow  # uses the module's one training run
def test_used_output_folder_is_refused(cli, quick_run, scene_dir):
    out = quick_run["out"]
    weights = {p: p.read_bytes() for p in (out / "weights").glob("*.ckpt")}
    stamp = (out / "training_result.json").stat().st_mtime_ns
    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", out, "--epochs", "1")
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    assert "already holds a run" in r.stderr and "--resume" in r.stderr and "--exist-ok" in r.stderr
    assert {p: p.read_bytes() for p in (out / "weights").glob("*.ckpt")} == weights  # earlier weights untouched
    assert (out / "training_result.json").stat().st_mtime_ns == stamp


@pytest.mark.slow  # trains a run
def test_exist_ok_starts_the_folder_over(cli, quick_run, scene_dir, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(quick_run["out"], out)
    r = cli("multimodal", "train", "--data-dir", scene_dir, "--output-dir", out, "--exist-ok", "--epochs", "1",
            "--batch-size", "4", *SMALL)
    assert r.exit_code == 0, r.stderr
    assert _result(out)["epochs_completed"] == 1 and [int(r["epoch"]) for r in _rows(out)] == [0, 1]


@pytest.mark.slow  # trains (and resumes) a run
def test_ctrl_c_exits_130_and_the_printed_command_resumes(cli, cli_interrupted, quick_run, scene_dir, tmp_path):
    out = tmp_path / "run"
    seed_cache(quick_run["out"], out)  # no encoder needed: the run reaches its epochs at once

    def after_first_epoch() -> bool:
        # epoch 2's row is written: epoch 1's checkpoint (saved just after its row) is complete
        csv_file = out / "results.csv"
        return csv_file.exists() and len(csv_file.read_text().splitlines()) >= 4

    args = ["multimodal", "train", "--data-dir", scene_dir, "--output-dir", out, "--epochs", "40", "--batch-size", "4", *SMALL]
    r = cli_interrupted(args, ready=after_first_epoch)
    assert r.exit_code == 130, r.stderr
    assert f"resume with: kitaeru multimodal train --resume {out}" in r.stderr and "Traceback" not in r.stderr
    result = _result(out)
    assert result["status"] == "interrupted" and 2 <= result["epochs_completed"] < 40
    assert result["resume_command"] == f"kitaeru multimodal train --resume {out}"

    command = r.stderr.split("resume with:", 1)[1].strip().splitlines()[0]
    words = shlex.split(command)
    assert words[0] == "kitaeru"
    r = cli(*words[1:])
    assert r.exit_code == 0, r.stderr
    result = _result(out)
    assert result["status"] == "completed" and result["epochs_completed"] == 40 and result["resumed_from_epoch"] >= 1
    assert [int(r["epoch"]) for r in _rows(out)] == list(range(0, 41))  # no epoch lost or repeated
    assert "embed_dim: 16" in (out / "config.yaml").read_text()  # the saved config came back with --resume


def test_wrong_data_dir_fails_before_heavy_imports(tmp_path):
    r, heavy = kitaeru_with_import_probe("multimodal", "train", "--data-dir", tmp_path / "missing",
                                         "--output-dir", tmp_path / "out")
    assert r.returncode == 2 and "data folder not found" in r.stderr and "Traceback" not in r.stderr
    assert not heavy, sorted(heavy)  # refused before torch/Lightning load, however busy the machine is
    assert not (tmp_path / "out").exists()
