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
from dataclasses import dataclass
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


PEFT_WEIGHTS = "adapter_model.safetensors"
CHECKPOINT_PREFIX = "checkpoint-"
# diffusers' key of the LoraConfig (rank, alpha, targets) inside a LoRA safetensors file's metadata
LORA_METADATA_KEY = "lora_adapter_metadata"


@dataclass
class AdapterFiles:
    """One trained adapter on disk, whichever folder of a run named it."""

    folder: Path  # final/ or checkpoint-N/
    weights: Path  # the safetensors file to load
    layout: str  # "diffusers" (unet./text_encoder. keys) or "peft" (the UNet's PEFT keys)
    run_dir: Optional[Path]  # the training run it belongs to (None: a bare adapter folder)


def resolve_adapter(path: str | os.PathLike, flag: str = "--lora") -> AdapterFiles:
    """The adapter behind any folder a LoRA run lists: ``lora_model/final`` (diffusers'
    ``pytorch_lora_weights.safetensors``), ``lora_model/checkpoint-N`` (PEFT-format
    ``adapter_model.safetensors``), the ``lora_model`` folder or the run folder (their ``final/``, else
    the newest checkpoint), or a plain folder of diffusers LoRA weights."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{flag} {path}: not found")
    lora_model = path / "lora_model" if (path / "lora_model").is_dir() else path
    candidates = [path]
    if not path.name.startswith(CHECKPOINT_PREFIX):
        candidates.append(lora_model / "final")
        ckpts = sorted((p for p in lora_model.glob(f"{CHECKPOINT_PREFIX}*")
                        if p.is_dir() and p.name[len(CHECKPOINT_PREFIX):].isdigit()),
                       key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))
        candidates += ckpts[-1:]
    for folder in candidates:
        for name, layout in ((LORA_WEIGHTS, "diffusers"), (PEFT_WEIGHTS, "peft")):
            if (folder / name).is_file():
                parent = folder.parent.parent if folder.parent.name == "lora_model" else None
                return AdapterFiles(folder, folder / name, layout, parent)
    raise DataError(f"{flag} {path}: no {LORA_WEIGHTS} or {PEFT_WEIGHTS} here nor in final/, lora_model/final/ "
                    "or a checkpoint-N folder")


def resolve_lora_dir(path: str | os.PathLike) -> Path:
    """The adapter folder (``final/`` or ``checkpoint-N/``) that ``--lora PATH`` names; see ``resolve_adapter``."""
    return resolve_adapter(path).folder


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_records(adapter: AdapterFiles) -> list[dict]:
    """What the training wrote about this adapter, nearest first: the checkpoint's state.json, the
    run's lora_model/adapter_config.json summary, the run's config.yaml."""
    if adapter.run_dir is None:
        return []
    records = [_read_json(adapter.folder / "state.json"), _read_json(adapter.folder.parent / "adapter_config.json")]
    if (adapter.run_dir / "config.yaml").is_file():
        try:
            import yaml

            saved = yaml.safe_load((adapter.run_dir / "config.yaml").read_text(encoding="utf-8"))
            records.append(saved if isinstance(saved, dict) else {})
        except (OSError, ValueError, yaml.YAMLError):
            pass
    return records


def base_model_of(lora_dir: str | os.PathLike) -> Optional[str]:
    """The base model an adapter was trained on, from what the training wrote beside it."""
    try:
        adapter = resolve_adapter(lora_dir)
    except DataError:
        return None
    peft = _read_json(adapter.folder / "adapter_config.json").get("base_model_name_or_path")
    for record in _run_records(adapter):
        value = record.get("base_model") or record.get("pretrained_model")
        if value:
            return str(value)
    return str(peft) if peft else None


def recorded_prediction_type(adapter: AdapterFiles) -> Optional[str]:
    """The training target the adapter was trained with (an override of the base's scheduler), if recorded."""
    for record in _run_records(adapter):
        if record.get("prediction_type"):
            return str(record["prediction_type"])
    return None


def adapter_lora_config(adapter: AdapterFiles) -> dict:
    """LoraConfig fields (rank, alpha, targets) of the UNet adapter, for files that do not carry them."""
    peft = _read_json(adapter.folder / "adapter_config.json")
    if peft.get("r"):
        return {k: peft[k] for k in ("r", "lora_alpha", "lora_dropout", "target_modules") if k in peft}
    for record in _run_records(adapter):
        rank = record.get("rank")
        if rank:
            return {"r": int(rank), "lora_alpha": float(record.get("lora_alpha") or rank),
                    "target_modules": list(record.get("target_modules") or ["to_k", "to_q", "to_v", "to_out.0"])}
    raise DataError(f"--lora {adapter.folder}: the adapter's rank and alpha are not recorded (no adapter_config.json "
                    "here and no training config beside it)")


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
    adapter = resolve_adapter(lora) if lora is not None else None
    # a --prediction-type override of the training must be the sampler's too, or it denoises the wrong target
    prediction = recorded_prediction_type(adapter) if adapter is not None else None
    extra = {"prediction_type": prediction} if prediction else {}
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, **extra)
    if adapter is not None:
        try:
            load_adapter(pipe, adapter)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise DataError(f"--lora {adapter.folder}: does not fit {pretrained} ({str(exc).splitlines()[0][:200]})") from None
        if lora_scale != 1.0:
            pipe.fuse_lora(lora_scale=lora_scale)
    pipe.to(info.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_adapter(pipe: Any, adapter: AdapterFiles, adapter_name: str = "default") -> None:
    """Load a trained adapter into ``pipe`` with its own rank and alpha.

    Files that carry diffusers' LoRA metadata (written since alpha was recorded) go through
    ``load_lora_weights`` as any diffusers user would load them (UNet and text encoder). Older final
    files and the PEFT-format checkpoints hold the UNet only and no alpha: diffusers would assume
    alpha = rank, so the LoraConfig recorded beside them is passed explicitly.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(adapter.weights), framework="pt") as fh:
            metadata = fh.metadata() or {}
    except Exception as exc:  # safetensors' own SafetensorError on a damaged file
        raise ValueError(f"{adapter.weights.name} is not a readable safetensors file ({exc})") from None
    recorded = None
    if LORA_METADATA_KEY not in metadata:
        try:
            recorded = adapter_lora_config(adapter)
        except DataError:
            if adapter.layout == "peft":
                raise
    # the file's own metadata, or a diffusers LoRA from elsewhere: diffusers reads it as it would anywhere
    if adapter.layout == "diffusers" and recorded is None:
        from diffusers.utils import logging as diffusers_logging

        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # "no text encoder keys" is expected of a UNet-only adapter
        try:
            pipe.load_lora_weights(str(adapter.folder), weight_name=adapter.weights.name, adapter_name=adapter_name)
        finally:
            diffusers_logging.set_verbosity(level)
        return
    state = load_file(str(adapter.weights))
    if adapter.layout == "diffusers":
        state = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    else:
        state = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    if not state:
        raise ValueError(f"{adapter.weights.name} holds no UNet LoRA weights")
    pipe.unet.load_lora_adapter(state, prefix=None, metadata=recorded, adapter_name=adapter_name, _pipeline=pipe)


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
