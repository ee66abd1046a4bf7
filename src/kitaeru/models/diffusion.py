"""Text-to-image pipelines for floor plans: load a diffusers pipeline (+ a LoRA) and generate.

Used by ``kitaeru lora generate`` and by ``kitaeru serve --lora``. The base model is always a
setting (a Hugging Face id or a local diffusers folder of any text-to-image pipeline), never a
hard-coded repository: the official Stable Diffusion 2.1 repositories left the Hub in Nov 2025.

The size rule: a plan of ``w x h`` grid cells is drawn at ``min(w*80, 1024) x min(h*80, 1024)``
pixels (a multiple of 8). Sampling uses DPM-Solver multistep; an image that comes out dark
(white lines on black) is inverted to black lines on white.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from kitaeru.core.errors import ConfigError, DataError

CELL_PX = 80
MAX_SIDE_PX = 1024
MAX_CELLS = 50
PROMPT_TEMPLATE = (
    "architectural floor plan, {w}x{h} room grid, technical blueprint, black lines on white background, "
    "clean CAD line drawing, walls and doors, orthogonal top view"
)
NEGATIVE_PROMPT = (
    "color, colorful, photo, photograph, 3d render, perspective view, shading, shadows, blurry, noisy, text, "
    "watermark, signature, people, furniture clutter, dark background"
)
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def floor_plan_size(width_cells: int, height_cells: int) -> tuple[int, int]:
    """Pixel size (width, height) of a plan of ``width_cells x height_cells`` grid cells."""
    for name, value in (("width", width_cells), ("height", height_cells)):
        if not 1 <= int(value) <= MAX_CELLS:
            raise ConfigError(f"{name} must be between 1 and {MAX_CELLS} grid cells (got {value})")

    def side(cells: int) -> int:
        return min(int(cells) * CELL_PX, MAX_SIDE_PX) // 8 * 8

    return side(width_cells), side(height_cells)


def floor_plan_prompt(width_cells: int, height_cells: int) -> str:
    return PROMPT_TEMPLATE.format(w=int(width_cells), h=int(height_cells))


def resolve_lora_dir(path: str | os.PathLike) -> Path:
    """The folder holding ``pytorch_lora_weights.safetensors``: ``final/`` itself, a ``lora_model``
    folder or a run folder (their ``final/``)."""
    path = Path(path)
    for candidate in (path, path / "final", path / "lora_model" / "final"):
        if (candidate / LORA_WEIGHTS).is_file():
            return candidate
    if not path.exists():
        raise DataError(f"--lora {path}: not found")
    raise DataError(f"--lora {path}: no {LORA_WEIGHTS} here nor in final/ or lora_model/final/")


def base_model_of(lora_dir: str | os.PathLike) -> Optional[str]:
    """The base model an adapter was trained on, from the training's ``adapter_config.json`` files."""
    lora_dir = Path(lora_dir)
    for candidate, key in ((lora_dir.parent / "adapter_config.json", "base_model"),
                           (lora_dir / "adapter_config.json", "base_model_name_or_path")):
        try:
            value = json.loads(candidate.read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if value:
            return str(value)
    return None


def looks_like_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1 or Path(text).exists()


def check_pretrained_model(name: Optional[str], flag: str = "--pretrained-model") -> str:
    """Cheap check of a base model setting: a local diffusers folder must hold ``model_index.json``."""
    if not name:
        raise ConfigError(f"{flag}: give the base pipeline (a Hugging Face id or a local diffusers folder; "
                          "an offline tiny one: kitaeru sample sd-pipeline --out DIR)")
    if looks_like_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise DataError(f"{flag} {name}: not found")
        if not (path / "model_index.json").is_file():
            raise DataError(f"{flag} {name}: not a diffusers pipeline folder (no model_index.json)")
    return name


def torch_dtype(name: str, device_type: str):
    import torch

    if name == "auto":
        return torch.float16 if device_type == "cuda" else torch.float32
    if name == "fp16" and device_type == "cpu":
        raise ConfigError("dtype fp16 needs a GPU; use fp32 or bf16 on the CPU")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def load_pipeline(pretrained: str, *, lora: str | os.PathLike | None = None, device: str = "auto",
                  dtype: str = "auto", lora_scale: float = 1.0) -> Any:
    """A diffusers text-to-image pipeline on ``device`` with DPM-Solver multistep and the LoRA fused in."""
    from kitaeru.core.device import resolve_device
    from kitaeru.core.errors import require

    require("diffusers", "lora", "Stable Diffusion pipelines")
    from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()  # loading bars; the caller reports what matters
    transformers_logging.disable_progress_bar()
    check_pretrained_model(pretrained)
    info = resolve_device(device)
    weights_dtype = torch_dtype(dtype, info.type)
    try:
        pipe = DiffusionPipeline.from_pretrained(pretrained, dtype=weights_dtype)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise DataError(f"--pretrained-model {pretrained}: cannot load a diffusers pipeline "
                        f"({str(exc).splitlines()[0][:200]})") from None
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # line drawings trip it; users of real bases may set it back
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    if lora is not None:
        lora_dir = resolve_lora_dir(lora)
        try:
            pipe.load_lora_weights(str(lora_dir), weight_name=LORA_WEIGHTS)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise DataError(f"--lora {lora_dir}: does not fit {pretrained} ({str(exc).splitlines()[0][:200]})") from None
        if lora_scale != 1.0:
            pipe.fuse_lora(lora_scale=lora_scale)
    pipe.to(info.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def invert_if_dark(image, threshold: float = 127.0):
    """(image, inverted): white-on-black drawings are turned into black-on-white ones."""
    from PIL import ImageOps, ImageStat

    gray = image.convert("L")
    if ImageStat.Stat(gray).mean[0] < threshold:
        return ImageOps.invert(image.convert("RGB")), True
    return image, False


def generate_floor_plan(pipe: Any, width_cells: int, height_cells: int, steps: int = 30, guidance: float = 7.5,
                        seed: int = 42, num_images: int = 1, prompt: Optional[str] = None,
                        negative_prompt: Optional[str] = None, invert_dark: bool = True) -> list[dict[str, Any]]:
    """Generate ``num_images`` plans: ``[{"image": PIL.Image, "inverted": bool}, ...]``."""
    import torch

    width, height = floor_plan_size(width_cells, height_cells)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.inference_mode():
        images = pipe(
            prompt=prompt or floor_plan_prompt(width_cells, height_cells),
            negative_prompt=negative_prompt if negative_prompt is not None else NEGATIVE_PROMPT,
            width=width, height=height, num_inference_steps=int(steps), guidance_scale=float(guidance),
            num_images_per_prompt=int(num_images), generator=generator, output_type="pil",
        ).images
    out = []
    for image in images:
        inverted = False
        if invert_dark:
            image, inverted = invert_if_dark(image)
        out.append({"image": image.convert("RGB"), "inverted": inverted})
    return out
