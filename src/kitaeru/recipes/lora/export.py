"""``lora_model/final``: the trained adapter as a folder ready for the Hub, and the run's adapter summary.

``final/`` holds what ``huggingface_hub.upload_folder`` or ``pipe.load_lora_weights(final)`` wants
at its top: ``pytorch_lora_weights.safetensors`` (diffusers' layout, with the LoRA config — rank,
alpha, targets — in its metadata, so alpha != rank loads at the trained strength), ``README.md``
(a model card: base model, captions, sample images, settings), ``images/`` (the last validation
images, when validation ran), and PEFT's own ``adapter_model.safetensors`` + ``adapter_config.json``.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Optional

from .checkpoints import FINAL_DIR, LORA_WEIGHTS, PEFT_WEIGHTS

MAX_CARD_CAPTIONS = 10


def export_final(trainer, steps: int, final_loss: Optional[float], plan: dict) -> Path:
    """Write ``lora_model/final`` (atomically: a temporary folder renamed) and ``lora_model/adapter_config.json``."""
    from safetensors.torch import save_file

    from kitaeru.core.storage import atomic_write_json

    from .model import lora_state_dict, save_diffusers_weights

    config = trainer.config
    final = trainer.lora_dir / FINAL_DIR
    tmp = trainer.lora_dir / f".tmp-{FINAL_DIR}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        unet = trainer.c.unet
        # PEFT's own layout (keys under base_model.model.), readable by PeftModel.from_pretrained(unet, dir).
        save_file({f"base_model.model.{k}": v for k, v in lora_state_dict(unet).items()}, str(tmp / PEFT_WEIGHTS))
        peft_config = copy.deepcopy(unet.peft_config["default"])
        peft_config.base_model_name_or_path = str(config.pretrained_model)
        peft_config.save_pretrained(str(tmp))
        save_diffusers_weights(trainer.modules, tmp)
        images = _copy_sample_images(trainer.state.validation_images, tmp / "images")
        (tmp / "README.md").write_text(model_card(trainer, steps, plan, images), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write_json(trainer.lora_dir / "adapter_config.json", {
        "base_model": str(config.pretrained_model), "steps": steps, "epochs": trainer.epochs_planned,
        "final_loss": final_loss, "rank": config.rank, "lora_alpha": config.lora_alpha or config.rank,
        "lora_dropout": config.lora_dropout, "target_modules": list(config.target_modules),
        "train_text_encoder": config.train_text_encoder,
        "resolution": plan["resolution"], "prediction_type": trainer.prediction_type,
        "learning_rate": trainer.learning_rate, "batch_size": config.batch_size,
        "weights": f"{FINAL_DIR}/{LORA_WEIGHTS}", "peft_adapter": f"{FINAL_DIR}/{PEFT_WEIGHTS}",
        "model_card": f"{FINAL_DIR}/README.md",
    })
    return final


def _copy_sample_images(paths: list[str], folder: Path) -> list[str]:
    """The last validation images beside the card (relative links work on the Hub and on disk)."""
    out = []
    for path in paths:
        source = Path(path)
        if source.is_file():
            folder.mkdir(exist_ok=True)
            shutil.copyfile(source, folder / source.name)
            out.append(f"images/{source.name}")
    return out


def model_card(trainer, steps: int, plan: dict, images: list[str]) -> str:
    """A Hub model card: YAML front matter (base model, tags) and what the adapter was trained on and how."""
    config = trainer.config
    base = str(config.pretrained_model)
    hub_base = base if not Path(base).expanduser().exists() else None  # a local folder is no Hub id
    captions = sorted({c for it in trainer.items for c in it.captions})
    front = ["---", "library_name: diffusers", "tags:", "- stable-diffusion", "- text-to-image", "- diffusers",
             "- lora", "- kitaeru"]
    if hub_base:
        front.append(f"base_model: {hub_base}")
    front += ["inference: true", "---", ""]
    body = [f"# LoRA adapter for {base}", "",
            f"Trained with `kitaeru lora train` on {len(trainer.items)} captioned images.", "",
            "## Use", "", "```python", "from diffusers import StableDiffusionPipeline", "",
            f'pipe = StableDiffusionPipeline.from_pretrained("{base}")',
            'pipe.load_lora_weights("PATH_OR_HUB_ID_OF_THIS_FOLDER")',
            f'image = pipe("{(captions[0] if captions else "a floor plan")[:200]}").images[0]', "```", "",
            "## Captions (trigger text)", ""]
    body += [f"- {c}" for c in captions[:MAX_CARD_CAPTIONS]]
    if len(captions) > MAX_CARD_CAPTIONS:
        body.append(f"- ... and {len(captions) - MAX_CARD_CAPTIONS} more")
    if images:
        body += ["", "## Sample images (last validation)", ""]
        body += [f"![{Path(i).stem}]({i})" for i in images]
    settings = [("base model", base), ("steps", steps), ("epochs", trainer.epochs_planned),
                ("resolution", plan["resolution"]), ("rank", config.rank), ("alpha", config.lora_alpha or config.rank),
                ("UNet targets", ", ".join(config.target_modules)), ("text encoder LoRA", config.train_text_encoder),
                ("learning rate", trainer.learning_rate), ("lr schedule", config.lr_scheduler),
                ("batch x accumulation x devices", f"{plan['batch_size']} x {plan['gradient_accumulation']} x {trainer.world}"),
                ("prediction type", trainer.prediction_type), ("Min-SNR gamma", config.snr_gamma),
                ("noise offset", config.noise_offset), ("precision", config.precision), ("seed", config.seed)]
    body += ["", "## Training settings", "", "| setting | value |", "|---|---|"]
    body += [f"| {k} | {v} |" for k, v in settings]
    return "\n".join(front + body) + "\n"
