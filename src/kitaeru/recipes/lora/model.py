"""The frozen parts of a Stable Diffusion pipeline and the LoRA adapters put on them.

The UNet always gets a LoRA (``--target-modules``); with ``--train-text-encoder`` the CLIP text
encoder's attention gets one too, with the targets diffusers' own scripts use for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitaeru.core.errors import ConfigError, DataError

from .config import TrainConfig

# The text encoder's attention projections (CLIP), as diffusers' DreamBooth LoRA script targets them.
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


@dataclass
class Components:
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any


def load_components(pretrained: str, dtype: Any = None) -> Components:
    """The frozen parts of an SD pipeline (weights in ``dtype``; our own progress bar replaces the libraries')."""
    from kitaeru.core.errors import require

    require("diffusers", "lora", "Stable Diffusion LoRA training")
    require("peft", "lora", "LoRA adapters")
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import AutoTokenizer, CLIPTextModel
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(pretrained, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder", dtype=dtype)
        vae = AutoencoderKL.from_pretrained(pretrained, subfolder="vae", dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", dtype=dtype)
        noise_scheduler = DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler")
    except (OSError, ValueError, EnvironmentError) as exc:
        raise DataError(f"--pretrained-model {pretrained}: cannot load a Stable Diffusion pipeline (tokenizer, "
                        f"text_encoder, vae, unet, scheduler): {str(exc).splitlines()[0][:200]}") from None
    for part in (text_encoder, vae, unet):
        part.requires_grad_(False)
    text_encoder.eval()
    vae.eval()
    return Components(tokenizer, text_encoder, vae, unet, noise_scheduler)


def check_target_modules(unet: Any, targets: list[str]) -> None:
    """Every target must name UNet modules (PEFT would fail later, or match nothing silently)."""
    names = [n for n, _ in unet.named_modules() if n]
    unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unknown:
        import torch

        leaves = sorted({n.split("attn1.", 1)[1] for n, m in unet.named_modules()
                         if "attn1." in n and isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"--target-modules: no UNet module named {', '.join(repr(u) for u in unknown)} "
                          f"(attention projections: {', '.join(leaves) or 'none'})")


def lora_config(config: TrainConfig, targets: list[str]):
    from peft import LoraConfig

    return LoraConfig(r=config.rank, lora_alpha=config.lora_alpha or config.rank, lora_dropout=config.lora_dropout,
                      init_lora_weights="gaussian", target_modules=list(targets))


def add_lora(components: Components, config: TrainConfig) -> None:
    """The adapters, in a fixed order (UNet, then text encoder) so the seeded init is reproducible."""
    components.unet.add_adapter(lora_config(config, config.target_modules))
    if config.train_text_encoder:
        components.text_encoder.add_adapter(lora_config(config, TEXT_ENCODER_TARGETS))


def trained_modules(components: Components, config: TrainConfig) -> dict[str, Any]:
    """``{"unet": ..., "text_encoder": ...}``: the modules whose LoRA is trained, saved and resumed."""
    out = {"unet": components.unet}
    if config.train_text_encoder:
        out["text_encoder"] = components.text_encoder
    return out


def adapter_metadata(module: Any) -> dict:
    """The LoraConfig of a module's adapter as diffusers stores it in the weights file (rank, alpha,
    targets): without it ``load_lora_weights`` assumes alpha = rank."""
    config = module.peft_config["default"].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}


def lora_state_dict(module: Any) -> dict:
    from peft.utils import get_peft_model_state_dict

    # no embedding layers are trained; "auto" would look the base up (on the Hub) to decide
    state = get_peft_model_state_dict(module, save_embedding_layers=False)
    return {k: v.detach().to("cpu").float().contiguous().clone() for k, v in state.items()}


def load_lora_state(module: Any, state: dict) -> None:
    from peft.utils import set_peft_model_state_dict

    result = set_peft_model_state_dict(module, state, adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise DataError(f"checkpoint does not fit this LoRA (unexpected keys such as {unexpected[0]})")


def save_diffusers_weights(modules: dict[str, Any], folder: Path) -> None:
    """``pytorch_lora_weights.safetensors`` with each module's LoraConfig in the file's metadata."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    kwargs: dict[str, Any] = {}
    for name, module in modules.items():
        kwargs[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(lora_state_dict(module))
        kwargs[f"{name}_lora_adapter_metadata"] = adapter_metadata(module)
    StableDiffusionPipeline.save_lora_weights(str(folder), safe_serialization=True, **kwargs)
