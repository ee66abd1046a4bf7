"""LoRA's bad inputs: one-line errors with exit 2 (never "unexpected"), nothing half-written."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest


def _one_line(result, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr[-2000:])
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert "unexpected" not in result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


@pytest.mark.parametrize("args, words", [
    (["--resolution", "4104"], ["resolution", "4096"]),
    (["--learning-rate", "inf"], ["learning_rate"]),
    (["--max-train-steps", "0"], ["max_train_steps"]),
])
def test_train_settings_refused_before_any_run(args, words, tiny_sd, tmp_path, cli):
    result = cli("lora", "train", "-d", tmp_path, "--pretrained-model", tiny_sd, "-o", tmp_path / "runs", *args)
    _one_line(result, *words)
    assert not (tmp_path / "runs").exists()


def test_generate_refuses_an_infinite_lora_scale(tiny_sd, tmp_path, cli):
    _one_line(cli("lora", "generate", "--pretrained-model", tiny_sd, "--lora-scale", "inf", "--out", tmp_path / "p.png"),
              "lora_scale")
    assert not list(tmp_path.iterdir())


def test_sample_sd_pipeline_under_a_regular_file(tmp_path, cli):
    (tmp_path / "file").write_text("x")
    _one_line(cli("sample", "sd-pipeline", "--out", tmp_path / "file" / "sd"), "--out", "file")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_sd, prepared_floorplans, one_compute_thread) -> Path:
    from kitaeru.cli import run

    root = tmp_path_factory.mktemp("runs")
    assert run(["lora", "train", "-d", str(prepared_floorplans), "--pretrained-model", str(tiny_sd), "-o", str(root),
                "--resolution", "32", "--batch-size", "3", "--epochs", "1", "--checkpoint-every", "1",
                "--validation-every", "0", "--device", "cpu", "--no-tensorboard"]) == 0
    return root / "train"


@pytest.mark.parametrize("damage, words", [
    ("state-list", ["state.json", "not a checkpoint state"]),
    ("state-garbage", ["state.json", "cannot resume"]),
    ("adapter-garbage", ["adapter_model.safetensors", "not a readable safetensors"]),
])
def test_broken_checkpoint_on_resume_is_one_line(finished_run, tmp_path, cli, damage, words):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    checkpoint = run / "lora_model" / "checkpoint-2"
    if damage == "state-list":
        (checkpoint / "state.json").write_text("[]")
    elif damage == "state-garbage":
        (checkpoint / "state.json").write_bytes(b"\x00\xff garbage")
    else:
        (checkpoint / "adapter_model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage!")
    before = (run / "training_result.json").read_text()
    _one_line(cli("lora", "train", "--resume", run, "--epochs", "2"), *words)
    assert (run / "training_result.json").read_text() == before  # refused before the run was touched


def test_train_json_has_status_and_resume_says_where_it_continues(finished_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "lora_model" / "checkpoint-2")
    result = cli("lora", "train", "--resume", run, "--epochs", "2", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "completed"
    assert f"resuming from {run / 'lora_model' / 'checkpoint-1'} (step 1 of 4, epoch 1 of 2)" in result.stderr


@pytest.mark.parametrize("where", ["copy", "metadata"])
def test_prepare_on_a_full_disk_names_the_file_and_leaves_no_tmp(shared_data, tmp_path, cli, monkeypatch, where):
    import kitaeru.recipes.lora.data as data

    raw = tmp_path / "raw"
    raw.mkdir()
    for path in sorted((shared_data / "floorplans").glob("*.png"))[:3]:
        shutil.copyfile(path, raw / path.name)
    out = tmp_path / "out"

    if where == "copy":
        def full_copy(source, target, *args, **kwargs):
            Path(target).write_bytes(Path(source).read_bytes()[:100])  # a part got written, then the disk filled
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(data.shutil, "copyfile", full_copy)
        name = "plan_"
    else:
        real = data.atomic_write_text

        def full_write(target, text):
            if Path(target).name == "metadata.jsonl":
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(target, text)

        monkeypatch.setattr(data, "atomic_write_text", full_write)
        name = "metadata.jsonl"
    result = cli("lora", "prepare", "-i", raw, "-o", out)
    _one_line(result, name, "no space left on device")
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_a_run_name_never_leaves_the_output_folder(tmp_path, cli):
    for name in ("../outside", "a/b", "/abs"):
        r = cli("lora", "train", "--pretrained-model", tmp_path / "base", "--data-dir", tmp_path / "data",
                "--output-dir", tmp_path / "runs", "--name", name)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and "name" in lines[0] and "folder" in lines[0], (name, r.stderr)
    assert not (tmp_path / "outside").exists() and not (tmp_path / "runs").exists()
