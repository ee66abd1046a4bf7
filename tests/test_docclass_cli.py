"""The docclass command line: spellings and aliases, presets, cheap checks before heavy imports, used
run folders, and the run lifecycle (Ctrl-C → ``interrupted``, exit 130, the printed resume command
finishes the run)."""

from __future__ import annotations

import csv
import json
import shlex

import pytest
import yaml
from guards import HEAVY_MODULES, run_python


def _print_config(cli, *args) -> dict:
    r = cli("docclass", "train", *args, "--print-config")
    assert r.exit_code == 0, r.stderr
    return yaml.safe_load(r.stdout)


def test_flags_aliases_and_overrides_reach_the_config(cli):
    c = _print_config(cli, "--cfg-name", "cpu_quickstart", "--lr", "0.01", "--batch", "8", "--imgsz", "64", "-d", "pool",
                      "-o", "out", "--epochs", "3", "--no-oom-recovery", "--loss", "arcface")
    assert (c["optim"]["learning_rate"], c["train"]["batch_size"], c["data"]["image_size"], c["train"]["epochs"]) == (0.01, 8, 64, 3)
    assert c["onnx"]["input_shape"]["img"]["shape"] == [1, 3, 64, 64]  # --image-size moves the ONNX input too
    assert (c["data"]["data_dir"], c["train"]["output_dir"], c["train"]["oom_recovery"], c["loss"]["name"]) == ("pool", "out", False, "arcface")
    assert c["name"] == "cpu_quickstart" and c["model"]["backbone"] == "test_efficientnet"
    assert _print_config(cli, "--learning-rate", "0.02")["optim"]["learning_rate"] == 0.02
    assert _print_config(cli, "learning_rate=0.03", "batch=4")["optim"]["learning_rate"] == 0.03
    c = _print_config(cli, "--set", "optim.lr=0.04", "augment.perspective=0.2", "--image-size", "80", "data_dir=x")
    assert (c["optim"]["learning_rate"], c["augment"]["perspective"], c["data"]["image_size"], c["data"]["data_dir"]) == (0.04, 0.2, 80, "x")
    assert "resume" not in c and "exist_ok" not in c and "image_size" not in c  # run switches are not config


def test_unknown_settings_and_commands_suggest_the_known_ones(cli):
    r = cli("docclass", "train", "optim.lrr=0.1")
    assert r.exit_code == 2 and "did you mean" in r.stderr and "optim.learning_rate" in r.stderr
    r = cli("docclass", "evalute")
    assert r.exit_code == 2 and "evaluate" in r.stderr
    r = cli("docclass", "train", "data.image_size=64")  # without the ONNX input: a clear refusal
    assert r.exit_code == 2 and "--image-size sets both" in r.stderr


def test_presets_command_lists_the_shipped_presets(cli):
    r = cli("docclass", "presets", "--json")
    assert r.exit_code == 0, r.stderr
    presets = json.loads(r.stdout)
    assert {"cpu_quickstart", "lcnet050_cosface_96", "lcnet050_arcface_128"} <= set(presets)
    assert presets["lcnet050_cosface_96"].startswith("kitaeru docclass train --cfg-name lcnet050_cosface_96")
    r = cli("docclass", "presets")
    assert r.exit_code == 0 and "lcnet050_arcface_128" in r.stdout


def test_every_mode_has_help_with_an_example(cli):
    for mode in ("train", "evaluate", "export", "export-onnx", "register", "classify"):
        r = cli("docclass", mode, "--help")
        assert r.exit_code == 0 and "Examples:" in r.stdout and "kitaeru docclass" in r.stdout, mode


def test_wrong_paths_fail_before_any_heavy_import(tmp_path):
    """A wrong --data-dir (and the other modes' paths) fail at once: torch is never imported."""
    missing = str(tmp_path / "missing")
    commands = [
        ["docclass", "train", "--data-dir", missing, "--output-dir", str(tmp_path / "runs")],
        ["docclass", "evaluate", "--model", missing + ".ckpt", "--templates", str(tmp_path)],
        ["docclass", "export", "--checkpoint", missing + ".ckpt"],
        ["docclass", "register", "--model", missing + ".onnx", "--templates", str(tmp_path)],
        ["docclass", "classify", "--model", missing + ".onnx", "--bank", "b.npz", "--image", str(tmp_path)],
        ["docclass", "train", "--resume", "--output-dir", str(tmp_path / "none")],
    ]
    code = (
        "import json, sys\n"
        "from kitaeru.cli import run\n"
        f"codes = [run(args) for args in {commands!r}]\n"
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n"
    )
    proc = run_python(code, env={"KITAERU_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["codes"] == [2] * len(commands), proc.stderr
    assert not report["heavy"], f"imported before the checks: {report['heavy']}"
    lines = proc.stderr.splitlines()
    assert "template pool not found" in lines[0] and "checkpoint not found" in lines[2] and "model not found" in lines[3]
    assert "--resume latest: no docclass run under" in lines[5]


def test_a_named_run_folder_that_holds_a_run_is_refused(cli, tmp_path):
    used = tmp_path / "runs" / "mine"
    used.mkdir(parents=True)
    (used / "training_result.json").write_text('{"status": "completed"}')
    r = cli("docclass", "train", "--output-dir", tmp_path / "runs", "--run-name", "mine")
    assert r.exit_code == 2 and "already holds a run" in r.stderr and "--resume" in r.stderr and "--exist-ok" in r.stderr
    r = cli("docclass", "train", "--output-dir", tmp_path / "runs", "--run-name", "mine", "--resume", used)
    assert r.exit_code == 2 and "give one of them" in r.stderr


@pytest.mark.slow  # three short epochs, interrupted and resumed
def test_ctrl_c_interrupts_and_the_printed_command_resumes(cli, cli_interrupted, tmp_path):
    """SIGINT in the second epoch: exit 130, 'interrupted' on disk, and the resume line finishes the run."""
    runs = tmp_path / "runs"
    run = runs / "cpu_quickstart"
    args = ["docclass", "train", "--cfg-name", "cpu_quickstart", "--output-dir", runs, "--epochs", "3", "--workers", "0",
            "--seed", "3", "data.sample_templates=3", "data.train_samples_per_class=48", "data.val_samples_per_class=3"]
    started = {}

    def ready() -> bool:
        result = run / "training_result.json"
        if result.exists() and "status" not in started:
            started["status"] = json.loads(result.read_text())["status"]  # 'running' from the first second
        return (run / "results.csv").exists() and (run / "weights" / "last.ckpt").exists()

    r = cli_interrupted(args, ready=ready)
    assert r.exit_code == 130, r.stderr[-2000:]
    assert started["status"] == "running"
    result = json.loads((run / "training_result.json").read_text())
    assert result["status"] == "interrupted" and result["recipe"] == "docclass" and result["epochs_planned"] == 3
    assert result["epochs_completed"] < 3
    line = [x for x in r.stderr.splitlines() if "resume with: " in x][-1]
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:4] == ["kitaeru", "docclass", "train", "--resume"] and command[4] == str(run)
    assert result["resume_command"] == line.split("resume with: ", 1)[1]

    r = cli(*command[1:], "--json")
    assert r.exit_code == 0, r.stderr
    final = json.loads(r.stdout)
    assert final["status"] == "completed" and final["epochs_completed"] == 3
    assert final["untrained_metrics"] == result["untrained_metrics"]  # measured once, before the interruption
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert [int(x["epoch"]) for x in rows] == [1, 2, 3]
    assert sorted(p.name for p in runs.iterdir()) == ["cpu_quickstart"]  # resumed in place, no new folder
    r = cli("docclass", "train", "--resume", run, "--image-size", "64")
    assert r.exit_code == 2 and "another network" in r.stderr and "data.image_size 48 vs 64" in r.stderr
    # A new run of the same config goes next to it, never over it.
    r = cli("docclass", "train", "--cfg-name", "cpu_quickstart", "--output-dir", runs, "--run-name", "cpu_quickstart")
    assert r.exit_code == 2 and "already holds a run" in r.stderr
