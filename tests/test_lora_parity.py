"""LoRA parity with diffusers and PEFT: every adapter folder of a run loads at its trained strength
(alpha != rank), generation samples with the recorded prediction type, and the prepared folder is
what the diffusers scripts' own dataset loader reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_sd, shared_data, one_compute_thread) -> Path:
    """Rank 4 / alpha 16 (scale 4), v-prediction on an epsilon base, a learning rate high enough for
    the adapter to matter, validation images for the model card; 3 images, batch 1 -> 3 steps."""
    from kitaeru.cli import run as kitaeru

    raw = tmp_path_factory.mktemp("raw")
    for path in sorted((shared_data / "floorplans").glob("*.png"))[:3]:
        shutil.copyfile(path, raw / path.name)
    root = tmp_path_factory.mktemp("runs")
    assert kitaeru(["lora", "train", "-d", str(raw), "--pretrained-model", str(tiny_sd), "-o", str(root),
                    "--resolution", "32", "--epochs", "1", "--rank", "4", "--lora-alpha", "16",
                    "--learning-rate", "0.05", "--checkpoint-every", "2", "--prediction-type", "v_prediction",
                    "--validation-every", "1", "--num-validation-images", "1", "--validation-steps", "2",
                    "--device", "cpu", "--seed", "1"]) == 0
    return root / "train"


def _unet_output(unet):
    import torch

    g = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=g)
    text = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(sample, 500, text, return_dict=False)[0]


def _peft_unet(tiny: Path, adapter_file: Path, *, alpha: float = 16):
    """The UNet with the adapter put in by PEFT itself (the reference for the right strength)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    unet = UNet2DConditionModel.from_pretrained(tiny, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=alpha, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    state = {k.removeprefix("base_model.model."): v for k, v in load_file(str(adapter_file)).items()}
    set_peft_model_state_dict(unet, state, adapter_name="default")
    return unet.eval()


def test_diffusers_load_lora_weights_keeps_alpha(run, tiny_sd):
    """Plain diffusers ``load_lora_weights`` on final/ gives the PEFT load's UNet output (scale 4, not 1)."""
    from diffusers import StableDiffusionPipeline

    final = run / "lora_model" / "final"
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    base = _unet_output(pipe.unet)
    pipe.load_lora_weights(str(final))
    ours = _unet_output(pipe.unet)
    reference = _unet_output(_peft_unet(tiny_sd, final / "adapter_model.safetensors"))
    effect = (reference - base).abs().max().item()
    assert effect > 1e-3  # the adapter matters, so a wrong scale would show
    assert (ours - reference).abs().max().item() < 1e-4 * max(1.0, effect)
    at_scale_one = _unet_output(_peft_unet(tiny_sd, final / "adapter_model.safetensors", alpha=4))
    assert (ours - at_scale_one).abs().max().item() > 0.1 * effect


@pytest.mark.parametrize("which", ["final", "checkpoint-2", "run", "lora_model", "run without final",
                                   "checkpoint without diffusers file"])
def test_every_adapter_folder_of_a_run_loads_at_its_strength(run, tiny_sd, tmp_path, which):
    """``resolve_adapter`` + ``load_pipeline`` (what lora generate, serve --lora and the dashboard call)."""
    from kitaeru.models.diffusion import base_model_of, load_pipeline, resolve_adapter

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    lora = copy / "lora_model"
    if which == "run without final":
        shutil.rmtree(lora / "final")
    if which == "checkpoint without diffusers file":  # checkpoints written before they carried one
        (lora / "checkpoint-2" / "pytorch_lora_weights.safetensors").unlink()
    path = {"final": lora / "final", "run": copy, "lora_model": lora, "run without final": copy}.get(
        which, lora / "checkpoint-2")
    adapter = resolve_adapter(path)
    expected = {"final": "final", "run": "final", "lora_model": "final"}.get(which, "checkpoint-")
    assert adapter.folder.name.startswith(expected)
    assert base_model_of(path) == str(tiny_sd)
    pipe = load_pipeline(str(tiny_sd), lora=path, device="cpu")
    reference = _peft_unet(tiny_sd, adapter.folder / "adapter_model.safetensors")
    assert (_unet_output(pipe.unet) - _unet_output(reference)).abs().max().item() < 1e-4


def test_generation_samples_with_the_recorded_prediction_type(run, tiny_sd, cli, tmp_path):
    from kitaeru.models.diffusion import load_pipeline

    assert json.loads((tiny_sd / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"
    assert load_pipeline(str(tiny_sd), lora=run, device="cpu").scheduler.config.prediction_type == "v_prediction"
    assert load_pipeline(str(tiny_sd), device="cpu").scheduler.config.prediction_type == "epsilon"
    checkpoint = run / "lora_model" / "checkpoint-2"
    assert load_pipeline(str(tiny_sd), lora=checkpoint, device="cpu").scheduler.config.prediction_type == "v_prediction"
    out = cli("lora", "generate", "-W", "1", "-H", "1", "--lora", checkpoint, "--steps", "1", "--out", tmp_path / "p.png",
              "--json")
    assert out.exit_code == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["status"] == "completed" and answer["lora"] == str(checkpoint)


def test_final_folder_is_hub_ready_with_a_model_card(run, tiny_sd):
    final = run / "lora_model" / "final"
    assert {"pytorch_lora_weights.safetensors", "README.md", "adapter_model.safetensors", "adapter_config.json",
            "images"} <= {p.name for p in final.iterdir()}
    card = (final / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: diffusers") and "- lora" in card
    assert str(tiny_sd) in card and "| alpha | 16" in card and "| prediction type | v_prediction |" in card
    assert "architectural floor plan drawing, 1f floor" in card  # the training captions
    images = sorted((final / "images").glob("*.png"))
    assert [p.name for p in images] == ["epoch001_prompt1_1.png"] and f"](images/{images[0].name})" in card
    result = json.loads((run / "training_result.json").read_text())
    assert result["model_card"] == str(final / "README.md")


def test_prepared_folder_loads_with_datasets_imagefolder(shared_data, tmp_path, cli):
    """What the diffusers scripts run on ``--train_data_dir``: exactly one metadata file, training rows only."""
    datasets = pytest.importorskip("datasets")
    raw = tmp_path / "raw"
    raw.mkdir()
    for path in sorted((shared_data / "floorplans").glob("*.png"))[:10]:
        shutil.copyfile(path, raw / path.name)
    (raw / sorted(raw.glob("*.png"))[0].with_suffix(".txt").name).write_text("caption one\ncaption two\n")
    out = tmp_path / "prepared"
    result = cli("lora", "prepare", "-i", raw, "-o", out, "--val-fraction", "0.2", "--seed", "3", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and summary["train"] == 8 and summary["val"] == 2
    assert [p.name for p in out.rglob("metadata.*")] == ["metadata.jsonl"]
    datasets.disable_progress_bars()
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), cache_dir=str(tmp_path / "hf"))
    assert list(loaded) == ["train"]
    train = loaded["train"]
    assert train.num_rows == 8 and {"image", "text"} <= set(train.column_names)
    import csv

    rows = list(csv.DictReader(open(out / "captions.csv", encoding="utf-8")))
    val_names = {Path(r["file_name"]).name for r in rows if r["split"] == "val"}
    assert len(val_names) == 2
    loaded_names = {Path(im.filename).name for im in train["image"]}
    assert not loaded_names & val_names
    assert ["caption one", "caption two"] in train["text"]  # several captions: a list the script draws from


def test_tiny_pipeline_vae_downsamples_8x_like_stable_diffusion(tiny_sd, tmp_path, cli):
    """Latents 8x smaller than the image, as in real SD, so a 10x8 plan (800x640 px) is a 100x80 latent."""
    from PIL import Image

    from kitaeru.models.diffusion import load_pipeline

    pipe = load_pipeline(str(tiny_sd), device="cpu")
    assert pipe.vae_scale_factor == 8
    import torch

    with torch.no_grad():
        latent = pipe.vae.encode(torch.zeros(1, 3, 640, 800)).latent_dist.mean
    assert tuple(latent.shape) == (1, 4, 80, 100)
    out = cli("lora", "generate", "--width", "10", "--height", "8", "--steps", "1", "--pretrained-model", tiny_sd,
              "--out", tmp_path / "plan.png", "--device", "cpu")
    assert out.exit_code == 0, out.stderr
    assert Image.open(tmp_path / "plan.png").size == (800, 640)
