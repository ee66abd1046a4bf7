"""kitaeru lora train on the tiny offline pipeline: evidence, checkpoints, exact resume, reload, OOM
ladder, Ctrl-C, and bad inputs that leave nothing behind."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

# 6 images, batch 2: 3 optimizer steps per epoch; a checkpoint every 2 steps.
COMMON = ["--resolution", "32", "--batch-size", "2", "--checkpoint-every", "2", "--learning-rate", "1e-3",
          "--device", "cpu", "--seed", "3"]


@pytest.fixture(scope="session")
def tiny(tiny_sd) -> Path:
    return tiny_sd


@pytest.fixture(scope="session")
def dataset(prepared_floorplans) -> Path:
    return prepared_floorplans


def _run(*args) -> int:
    from kitaeru.cli import run

    return run([str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny, dataset, one_compute_thread):
    """A 2-epoch run with validation images (to be resumed to 4 later) and a straight 4-epoch run."""
    root = tmp_path_factory.mktemp("runs")
    base = ["lora", "train", "-d", dataset, "--pretrained-model", tiny, "-o", root, *COMMON]
    assert _run(*base, "--name", "half", "--epochs", "2", "--checkpoints-total-limit", "2",
                "--validation-every", "1", "--num-validation-images", "1", "--validation-steps", "2") == 0
    assert _run(*base, "--name", "full", "--epochs", "4", "--validation-every", "0") == 0
    return {"root": root, "half": root / "half", "full": root / "full"}


def _rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(run_dir / "results.csv", encoding="utf-8")))


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "training_result.json").read_text())


@pytest.mark.slow
def test_two_epochs_leave_the_evidence_checkpoints_and_adapter(runs):
    import torch
    from safetensors.torch import load_file

    run = runs["half"]
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(float(r["loss"]) > 0 and float(r["lr"]) == 1e-3 and float(r["seconds"]) > 0 for r in rows)
    assert [r["step"] for r in rows] == ["3", "6"]
    result = _result(run)
    assert result["status"] == "completed" and result["recipe"] == "lora" and result["epochs_completed"] == 2
    assert result["steps"] == 6 and result["epochs_planned"] == 2 and result["oom_recoveries"] == []
    assert result["resume_command"] == f"kitaeru lora train --resume {run}"
    assert (run / "config.yaml").is_file() and (run / "tensorboard").is_dir()
    # Checkpoints at 2, 4, 6; the limit of 2 pruned the oldest.
    lora = run / "lora_model"
    assert sorted(p.name for p in lora.iterdir()) == ["adapter_config.json", "checkpoint-4", "checkpoint-6", "final"]
    ckpt = lora / "checkpoint-6"
    # PEFT weights for resume, diffusers weights (with rank/alpha) for load_lora_weights and generate
    assert sorted(p.name for p in ckpt.iterdir()) == ["adapter_model.safetensors", "optimizer.pt",
                                                       "pytorch_lora_weights.safetensors", "rng.pt",
                                                       "scheduler.pt", "state.json"]
    for name in ("optimizer.pt", "rng.pt", "scheduler.pt"):
        torch.load(ckpt / name, weights_only=True)
    assert json.loads((ckpt / "state.json").read_text())["step"] == 6
    assert load_file(str(ckpt / "adapter_model.safetensors"))
    final = lora / "final"
    assert {"adapter_config.json", "adapter_model.safetensors", "pytorch_lora_weights.safetensors"} <= {p.name for p in final.iterdir()}
    peft = json.loads((final / "adapter_config.json").read_text())
    assert peft["peft_type"] == "LORA" and peft["r"] == 4 and set(peft["target_modules"]) == {"to_k", "to_q", "to_v", "to_out.0"}
    summary = json.loads((lora / "adapter_config.json").read_text())
    assert summary["base_model"] == str(Path(result["base_model"])) and summary["steps"] == 6
    assert summary["final_loss"] == pytest.approx(result["final_loss"])
    # Validation images of each epoch, at the training resolution.
    from PIL import Image

    images = sorted((run / "validation").glob("*.png"))
    assert [p.name for p in images] == ["epoch001_prompt1_1.png", "epoch002_prompt1_1.png"]
    assert Image.open(images[0]).size == (32, 32)
    assert not list(lora.glob(".tmp*"))


@pytest.mark.slow
def test_resumed_run_ends_with_the_same_adapter_as_a_straight_run(runs, cli):
    from safetensors.torch import load_file

    full_result = _result(runs["full"])
    assert full_result["latent_cache"]["hit"] is True  # same model, data and resolution as the first run
    result = cli("lora", "train", "--resume", runs["half"], "--epochs", "4", "--json")
    assert result.exit_code == 0, result.stderr
    resumed = json.loads(result.stdout)
    assert resumed["steps"] == 12 and resumed["resumed_from"].endswith("checkpoint-6")
    assert [r["epoch"] for r in _rows(runs["half"])] == ["1", "2", "3", "4"]
    a = load_file(str(runs["full"] / "lora_model" / "final" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(runs["half"] / "lora_model" / "final" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert (a[key] - b[key]).abs().max().item() < 1e-6, key
    losses_a = [float(r["loss"]) for r in _rows(runs["full"])]
    losses_b = [float(r["loss"]) for r in _rows(runs["half"])]
    assert losses_a == pytest.approx(losses_b, rel=1e-5)
    assert _result(runs["half"])["status"] == "completed" and _result(runs["half"])["epochs_completed"] == 4


@pytest.mark.slow
def test_final_adapter_reloads_into_a_fresh_pipeline_and_changes_its_output(runs, tiny):
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline

    def picture(pipe):
        pipe.set_progress_bar_config(disable=True)
        return pipe("architectural floor plan", height=32, width=32, num_inference_steps=2, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images[0]

    pipe = StableDiffusionPipeline.from_pretrained(tiny, safety_checker=None)
    before = picture(pipe)
    pipe.load_lora_weights(str(runs["full"] / "lora_model" / "final"))
    after = picture(pipe)
    assert before.shape == after.shape == (32, 32, 3)
    assert np.abs(before - after).max() > 1e-4


@pytest.mark.slow
def test_other_training_options_run(tiny, dataset, tmp_path, cli, one_compute_thread):
    result = cli("lora", "train", "-d", dataset, "--pretrained-model", tiny, "-o", tmp_path, *COMMON, "--epochs", "1",
                 "--no-cache-latents", "--random-flip", "--no-center-crop", "--snr-gamma", "5", "--noise-offset", "0.05",
                 "--prediction-type", "v_prediction", "--gradient-accumulation", "2", "--lr-scheduler", "cosine",
                 "--validation-every", "0", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["prediction_type"] == "v_prediction" and out["latent_cache"] == {"enabled": False}
    assert out["steps"] == 2 and out["final_loss"] > 0  # 6 images, effective batch 4
    assert (tmp_path / "train" / "lora_model" / "final" / "pytorch_lora_weights.safetensors").is_file()
    # A second run with no name goes next to the first one.
    again = cli("lora", "train", "-d", dataset, "--pretrained-model", tiny, "-o", tmp_path, *COMMON, "--epochs", "1",
                "--mixed-precision", "bf16", "--gradient-checkpointing", "--num-validation-images", "1",
                "--validation-steps", "2", "rank=2", "--json")
    assert again.exit_code == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["run_dir"] == str(tmp_path / "train2") and len(second["validation_images"]) == 1
    assert json.loads((tmp_path / "train2" / "lora_model" / "adapter_config.json").read_text())["rank"] == 2
    # A bare --resume means the newest run under --output-dir; a finished run just re-exports its adapter.
    latest = cli("lora", "train", "--resume", "-o", tmp_path, "--json")
    assert latest.exit_code == 0, latest.stderr
    assert json.loads(latest.stdout)["run_dir"] == str(tmp_path / "train2") and json.loads(latest.stdout)["steps"] == 3
    # A named folder that holds a run is refused.
    used = cli("lora", "train", "-d", dataset, "--pretrained-model", tiny, "-o", tmp_path, "--name", "train", *COMMON)
    assert used.exit_code == 2 and "--resume" in used.stderr and "--exist-ok" in used.stderr


@pytest.mark.slow
def test_out_of_memory_ladder_resumes_from_the_last_checkpoint(tiny, dataset, tmp_path, cli, one_compute_thread):
    import torch

    from kitaeru.recipes.lora.config import TrainConfig
    from kitaeru.recipes.lora.training import train_lora

    seen = []

    def simulated_oom(step: int, plan: dict) -> None:
        seen.append((step, plan["batch_size"], plan["gradient_checkpointing"]))
        if step == 3 and plan["batch_size"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        if step == 5 and not plan["gradient_checkpointing"]:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    config = TrainConfig(data_dir=str(dataset), pretrained_model=str(tiny), output_dir=str(tmp_path), resolution=32,
                         batch_size=2, checkpoint_every=2, epochs=2, device="cpu", validation_every=0, learning_rate=1e-3)
    result = train_lora(config, step_hook=simulated_oom)
    steps = result["oom_recoveries"]
    assert [s["step"] for s in steps] == ["halve_batch", "gradient_checkpointing"]
    assert "batch 2 -> 1" in steps[0]["change"] and "gradient accumulation 1 -> 2" in steps[0]["change"]
    assert result["plan"] == {"batch_size": 1, "gradient_accumulation": 2, "gradient_checkpointing": True, "resolution": 32}
    assert result["steps"] == 6  # the effective batch was kept
    # Each recovery continued from checkpoint-2 and checkpoint-4, not from step 0.
    assert [s for s, _, _ in seen] == [1, 2, 3, 3, 4, 5, 5, 6]
    saved = json.loads((tmp_path / "train" / "training_result.json").read_text())
    assert saved["status"] == "completed" and len(saved["oom_recoveries"]) == 2
    # Training on from there keeps what the ladder settled on instead of running out of memory again.
    resumed = cli("lora", "train", "--resume", tmp_path / "train", "--epochs", "3", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    more = json.loads(resumed.stdout)
    assert more["steps"] == 9 and more["oom_recoveries"] == [] and more["plan"] == result["plan"]


BAD_INPUTS = {
    "unknown target module": (["--target-modules", "to_z"], "to_z"),
    "rank 0": (["--rank", "0"], "rank"),
    "missing base model": (["--pretrained-model", "/nonexistent/sd-base"], "/nonexistent/sd-base"),
    "resolution not a multiple of 8": (["--resolution", "30"], "multiple of 8"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_settings_are_one_line_errors_and_leave_no_run(case, tiny, dataset, tmp_path, cli):
    args, words = BAD_INPUTS[case]
    base = ["lora", "train", "-d", dataset, "-o", tmp_path / "runs", "--epochs", "1", "--resolution", "32"]
    if "--pretrained-model" not in args:
        base += ["--pretrained-model", tiny]
    result = cli(*base, *args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1 and words in result.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_data_is_a_one_line_error_and_leaves_no_run(tiny, shared_data, tmp_path, cli):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("lora", "train", "-d", empty, "--pretrained-model", tiny, "-o", tmp_path / "runs")
    assert result.exit_code == 2 and "no images" in result.stderr and result.stderr.count("\n") == 1
    missing = cli("lora", "train", "-d", tmp_path / "nope", "--pretrained-model", tiny, "-o", tmp_path / "runs")
    assert missing.exit_code == 2 and "not found" in missing.stderr
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in sorted((shared_data / "floorplans").glob("*.png"))[:3]:
        shutil.copyfile(path, raw / path.name)
    (raw / "plan_1.json").write_text(json.dumps({"grid": "none"}))
    no_keys = cli("lora", "train", "-d", raw, "--pretrained-model", tiny, "-o", tmp_path / "runs", "--resolution", "32")
    assert no_keys.exit_code == 2 and "plan_1.json" in no_keys.stderr and "grid_mm" in no_keys.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ctrl_c_exits_130_with_the_resume_command_that_completes(tiny, dataset, tmp_path, cli_interrupted, cli,
                                                                 one_compute_thread):
    run_dir = tmp_path / "train"
    args = ["lora", "train", "-d", dataset, "--pretrained-model", tiny, "-o", tmp_path, *COMMON, "--epochs", "20",
            "--validation-every", "0", "--no-tensorboard"]
    stopped = cli_interrupted(args, ready=lambda: (run_dir / "results.csv").exists(), env={"OMP_NUM_THREADS": "1"})
    assert stopped.exit_code == 130, stopped.stderr[-2000:]
    line = [ln for ln in stopped.stderr.splitlines() if "resume with:" in ln]
    assert line, stopped.stderr[-2000:]
    command = line[-1].split("resume with:", 1)[1].split()
    assert command[:4] == ["kitaeru", "lora", "train", "--resume"]
    assert _result(run_dir)["status"] == "interrupted"
    resumed = cli(*command[1:])
    assert resumed.exit_code == 0, resumed.stderr
    result = _result(run_dir)
    assert result["status"] == "completed" and result["epochs_completed"] == 20 and result["steps"] == 60
