"""What diffusers users reach for: a step budget, --resume-from-checkpoint, several captions per image,
text-encoder LoRA, --scale-lr, --max-train-samples; resumed exactly like the rest."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# 4 images (one with two captions), batch 1: 4 steps per epoch.
COMMON = ["--resolution", "32", "--checkpoint-every", "2", "--learning-rate", "1e-2", "--device", "cpu",
          "--seed", "5", "--validation-every", "0", "--train-text-encoder", "--no-tensorboard"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared_data) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    for path in sorted((shared_data / "floorplans").glob("*.png"))[:4]:
        shutil.copyfile(path, raw / path.name)
    first = sorted(raw.glob("*.png"))[0]
    first.with_suffix(".txt").write_text("a plan drawn one way\na plan drawn another way\n")
    from kitaeru.recipes.lora.data import prepare_dataset

    out = tmp_path_factory.mktemp("prepared")
    prepare_dataset(raw, out, val_fraction=0.0, seed=0, min_size=64)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_sd, data, one_compute_thread) -> dict:
    """A straight 6-step run (budget inside epoch 2) and a 3-step run resumed to 6."""
    from kitaeru.cli import run

    root = tmp_path_factory.mktemp("runs")
    base = ["lora", "train", "-d", str(data), "--pretrained-model", str(tiny_sd), "-o", str(root), *COMMON]
    assert run([*base, "--name", "straight", "--max-train-steps", "6"]) == 0
    assert run([*base, "--name", "half", "--max-train-steps", "3"]) == 0
    return {"root": root, "straight": root / "straight", "half": root / "half"}


def _result(run_dir: Path) -> dict:
    return json.loads((run_dir / "training_result.json").read_text())


def test_step_budget_stops_mid_epoch(runs):
    result = _result(runs["straight"])
    assert result["steps"] == 6 and result["max_train_steps"] == 6 and result["epochs_planned"] == 2
    rows = list(csv.DictReader(open(runs["straight"] / "results.csv", encoding="utf-8")))
    assert [(r["epoch"], r["step"]) for r in rows] == [("1", "4"), ("2", "6")]
    assert _result(runs["half"])["steps"] == 3


def test_resume_from_checkpoint_spelling_continues_exactly(runs, cli):
    """Several captions (one drawn per step) and the text-encoder LoRA resume to the same weights."""
    from safetensors.torch import load_file

    resumed = cli("lora", "train", "--resume-from-checkpoint", runs["half"], "--max-train-steps", "6", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    answer = json.loads(resumed.stdout)
    assert answer["status"] == "completed" and answer["steps"] == 6
    assert answer["resumed_from"].endswith("checkpoint-3")
    assert "resuming from" in resumed.stderr and "checkpoint-3 (step 3 of 6" in resumed.stderr
    a = load_file(str(runs["straight"] / "lora_model" / "final" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(runs["half"] / "lora_model" / "final" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("text_encoder.") for k in a)
    for key in a:
        assert (a[key] - b[key]).abs().max().item() < 1e-6, key


def test_text_encoder_lora_loads_into_plain_diffusers(runs, tiny_sd):
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    tokens = pipe.tokenizer(["a plan"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        before = pipe.text_encoder(tokens)[0]
        pipe.load_lora_weights(str(runs["straight"] / "lora_model" / "final"))
        after = pipe.text_encoder(tokens)[0]
    assert (before - after).abs().max().item() > 1e-5
    checkpoint = runs["straight"] / "lora_model" / "checkpoint-6"
    assert (checkpoint / "text_encoder_adapter_model.safetensors").is_file()


def test_several_captions_reach_training_and_the_card(runs, data):
    rows = list(csv.DictReader(open(data / "captions.csv", encoding="utf-8")))
    several = [r for r in rows if r["captions"]]
    assert len(several) == 1 and json.loads(several[0]["captions"]) == ["a plan drawn one way", "a plan drawn another way"]
    card = (runs["straight"] / "lora_model" / "final" / "README.md").read_text()
    assert "- a plan drawn one way" in card and "- a plan drawn another way" in card
    assert "| text encoder LoRA | True |" in card


def test_caption_draw_is_seeded_and_uses_every_caption():
    """The per-step draw: each of an image's captions comes up, the same sequence for the same seed."""
    import torch

    from kitaeru.recipes.lora.data import TrainItem
    from kitaeru.recipes.lora.loop import LoraTrainer

    trainer = LoraTrainer.__new__(LoraTrainer)  # only the draw is exercised: no models needed
    trainer.items = [TrainItem(Path("a.png"), ["x", "y", "z"]), TrainItem(Path("b.png"), ["w"])]

    def draws(seed: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(seed)
        return [trainer._caption_choice([0, 1], g) for _ in range(30)]

    first = draws(1)
    assert first == draws(1) and first != draws(2)
    assert {d[0] for d in first} == {0, 1, 2} and {d[1] for d in first} == {0}


def test_scale_lr_and_max_train_samples(tiny_sd, data, tmp_path, cli, one_compute_thread):
    result = cli("lora", "train", "-d", data, "--pretrained-model", tiny_sd, "-o", tmp_path, "--resolution", "32",
                 "--device", "cpu", "--validation-every", "0", "--no-tensorboard", "--epochs", "1", "--batch-size", "2",
                 "--learning-rate", "1e-4", "--scale-lr", "--max-train-samples", "2", "--mixed-precision", "no", "--json")
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["learning_rate"] == pytest.approx(2e-4)  # x the effective batch of 2
    assert answer["steps"] == 1 and json.loads((tmp_path / "train" / "training_result.json").read_text())["data"]["images"] == 2
    saved = (tmp_path / "train" / "config.yaml").read_text()
    assert "precision: 'no'" in saved or "precision: no" in saved  # one vocabulary: the old spelling is an alias
