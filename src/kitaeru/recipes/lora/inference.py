"""``kitaeru lora generate``: floor plans of a grid size from the base pipeline (+ the trained LoRA)."""

from __future__ import annotations

import os
from pathlib import Path

from kitaeru.core.errors import ConfigError

from .config import GenerateConfig


def check_generate(config: GenerateConfig) -> str:
    """Cheap checks; returns the base model to load (given, or the one the adapter was trained on)."""
    from kitaeru.models.diffusion import base_model_of, check_pretrained_model, resolve_lora_dir

    base = config.pretrained_model
    if config.lora is not None:
        lora_dir = resolve_lora_dir(config.lora)
        base = base or base_model_of(lora_dir)
    if not base:
        raise ConfigError("--pretrained-model: give the base pipeline (the adapter does not record one)")
    check_pretrained_model(base)
    if not config.output.lower().endswith(".png"):
        raise ConfigError(f"--output {config.output}: write a .png file")
    from kitaeru.core.storage import check_output_path

    check_output_path(config.output, setting="--output")
    return base


def output_paths(out: str, n: int) -> list[Path]:
    """``plan.png`` or ``plan.png, plan_2.png, ...``."""
    first = Path(out)
    return [first] + [first.with_name(f"{first.stem}_{i}{first.suffix}") for i in range(2, n + 1)]


def generate_plans(config: GenerateConfig) -> dict:
    from kitaeru.models.diffusion import (floor_plan_prompt, floor_plan_size, generate_floor_plan, load_pipeline,
                                          resolve_lora_dir)

    base = check_generate(config)
    lora_dir = resolve_lora_dir(config.lora) if config.lora else None
    pipe = load_pipeline(base, lora=config.lora, device=config.device, dtype=config.dtype, lora_scale=config.lora_scale)
    results = generate_floor_plan(pipe, config.width, config.height, steps=config.steps, guidance=config.guidance,
                                  seed=config.seed, num_images=config.num_images, prompt=config.prompt,
                                  negative_prompt=config.negative_prompt, invert_dark=config.invert_dark)
    paths = output_paths(config.output, len(results))
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path, item in zip(paths, results):
        tmp = path.with_name(f".{path.name}.tmp.png")
        try:
            item["image"].save(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    width, height = floor_plan_size(config.width, config.height)
    return {
        "status": "completed", "images": [str(p) for p in paths], "width_px": width, "height_px": height,
        "grid": [config.width, config.height], "prompt": config.prompt or floor_plan_prompt(config.width, config.height),
        "seed": config.seed, "steps": config.steps, "guidance": config.guidance, "base_model": base,
        "lora": str(lora_dir) if lora_dir else None, "inverted": [r["inverted"] for r in results],
    }
