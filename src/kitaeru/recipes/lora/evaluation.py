"""Validation images during training: the prompts drawn with the adapter as it is, seeded, saved
under ``validation/`` and to TensorBoard (rank 0 only)."""

from __future__ import annotations

import os
from typing import Any


def training_pipeline(trainer) -> Any:
    """A pipeline over the components being trained (the sampler with the training's prediction type)."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    c = trainer.c
    pipe = StableDiffusionPipeline(
        vae=c.vae, text_encoder=c.text_encoder, tokenizer=c.tokenizer, unet=c.unet,
        scheduler=DPMSolverMultistepScheduler.from_config(c.noise_scheduler.config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def validate(trainer, fabric, epoch: int, resolution: int) -> list[str]:
    import numpy as np
    import torch

    config = trainer.config
    folder = trainer.run.path / "validation"
    folder.mkdir(exist_ok=True)
    for module in trainer.modules.values():
        module.eval()
    pipe = training_pipeline(trainer)
    written = []
    for p_index, prompt in enumerate(config.validation_prompt):
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        with torch.no_grad(), fabric.autocast():
            images = pipe(prompt, height=resolution, width=resolution, num_inference_steps=config.validation_steps,
                          num_images_per_prompt=config.num_validation_images, generator=generator).images
        for i, image in enumerate(images):
            path = folder / f"epoch{epoch:03d}_prompt{p_index + 1}_{i + 1}.png"
            tmp = path.with_name(f".{path.name}.tmp.png")
            try:
                image.save(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(str(path))
        if config.tensorboard:
            writer = image_writer(trainer)
            stacked = np.stack([np.asarray(im.convert("RGB")) for im in images])
            writer.add_images(f"validation/prompt{p_index + 1}", stacked, epoch, dataformats="NHWC")
            writer.flush()
    trainer.state.validation_images = written
    trainer.c.text_encoder.eval()  # frozen unless trained; the loop puts trained modules back in train()
    return written


def image_writer(trainer):
    if trainer.writer is None:
        from torch.utils.tensorboard import SummaryWriter

        trainer.writer = SummaryWriter(log_dir=str(trainer.run.tensorboard_dir))
    return trainer.writer
