"""Config schemas of the floor-plan LoRA recipe, one per mode; each field is declared once, here.

``PrepareConfig`` (pair images with captions), ``TrainConfig`` (LoRA on a Stable Diffusion UNet)
and ``GenerateConfig`` (floor plans of a grid size). ``--cfg-name floorplan_sd21`` gives the guide's
training values. Light imports only: the CLI reads this module to build ``--help``.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import field_validator

from kitaeru.core.config import RecipeConfig, RunName, setting
from kitaeru.core.distributed import DEVICES_HELP, NUM_NODES_HELP, DeviceCount
from kitaeru.core.tracking import TrackingSettings, tracking_section

RECIPE_NAME = "lora"
GUIDE_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
# The caption template of the guide's dataset (floor and grid size filled per image).
CAPTION_TEMPLATE = (
    "architectural floor plan drawing, {floor} floor, technical blueprint, black lines on white background, "
    "room layout with walls and doors, professional CAD style drawing, grid size {grid_mm}mm"
)
DEFAULT_VALIDATION_PROMPT = CAPTION_TEMPLATE.format(floor="1f", grid_mm=910)
MAX_RESOLUTION = 4096  # SD bases are trained at 512-1024; beyond this a step cannot fit any GPU


class PrepareConfig(RecipeConfig):
    images: Optional[str] = setting(
        None, "Folder of floor-plan images (*.png/*.jpg), each with an optional same-name .json (v1.0 grid_px/grid_mm/"
        "floor, or the v2.0 structural format) or .txt/.caption file.", aliases=["image_dir", "data_dir", "dataset"],
        short="-i", metavar="DIR")
    output_dir: Optional[str] = setting(
        None, "Folder to write the prepared dataset to (images/, metadata.jsonl with the training rows, captions.csv/"
        ".json with every image and its split).",
        aliases=["output"], short="-o", metavar="DIR")
    val_fraction: float = setting(0.1, "Share of images held out as validation (split 'val' in captions.csv).", ge=0.0, lt=1.0)
    seed: int = setting(42, "Seed of the train/validation shuffle.")
    min_size: int = setting(64, "Images smaller than this (pixels, either side) are skipped and listed.", ge=1)


class TrainConfig(RecipeConfig):
    data_dir: Optional[str] = setting(
        None, "Prepared dataset (from 'kitaeru lora prepare': captions.csv, else metadata.jsonl) or a plain folder "
        "of images (captions made on the fly the way prepare makes them).", aliases=["dataset", "data", "train_data_dir"],
        short="-d", metavar="DIR")
    pretrained_model: Optional[str] = setting(
        None, "Base Stable Diffusion pipeline: a Hugging Face id or a local diffusers folder (for an offline try: "
        "'kitaeru sample sd-pipeline --out DIR').", aliases=["pretrained_model_name_or_path", "base_model", "model"],
        metavar="ID_OR_DIR")
    output_dir: str = setting("runs/lora", "Folder of runs; each run is <output-dir>/<name> (train, train2, ...).",
                              aliases=["output"], short="-o", metavar="DIR")
    name: Optional[RunName] = setting(None, "Run folder name under --output-dir (default: train, train2, ...).",
                                  aliases=["run_name"])
    exist_ok: bool = setting(False, "Allow writing a new run into a named folder that already holds one.")
    resume: Optional[str] = setting(
        None, "Continue a run: 'latest' (newest run under --output-dir) or a run folder or checkpoint-N folder. "
        "The run's saved config is used; settings given here override it, even at their default (e.g. --epochs 10 "
        "to train longer); the adapter's shape (--rank, --lora-alpha, --target-modules, --train-text-encoder) "
        "cannot change.", flag_value="latest", metavar="latest|PATH",
        aliases=["resume_from_checkpoint"])
    # --- data
    resolution: int = setting(512, "Training image side in pixels (a multiple of 8, at most 4096).",
                              aliases=["image_size", "imgsz"], ge=8, le=MAX_RESOLUTION)
    center_crop: bool = setting(True, "Crop the square from the centre (off: a random square, fixed per image when "
                                "latents are cached).")
    pad: bool = setting(False, "Pad each image to a square on white instead of cropping (keeps the whole plan).")
    random_flip: bool = setting(False, "Flip images horizontally at random (with cached latents both versions are "
                                "cached and one is drawn per step).")
    cache_latents: bool = setting(True, "Encode every image with the VAE and every caption with the text encoder once "
                                  "and cache them (keyed by model + data + resolution); off: re-encode every step.")
    cache_dir: Optional[str] = setting(None, "Where cached latents live (default: <output-dir>/.latent_cache).", flag=False)
    max_train_samples: Optional[int] = setting(None, "Train on this many images only (a seeded draw; for quick tries).", ge=1)
    # --- LoRA
    rank: int = setting(4, "LoRA rank.", aliases=["lora_rank"], ge=1)
    lora_alpha: Optional[float] = setting(None, "LoRA alpha (default: the rank).", aliases=["alpha"], gt=0)
    lora_dropout: float = setting(0.0, "LoRA dropout.", ge=0.0, lt=1.0)
    target_modules: list[str] = setting(default_factory=lambda: list(GUIDE_TARGETS),
                                        description="UNet modules that get LoRA (repeatable).", aliases=["targets"])
    train_text_encoder: bool = setting(False, "Also train a LoRA on the text encoder's attention (q/k/v/out); caption "
                                       "embeddings are then computed every step instead of cached.")
    # --- optimisation
    epochs: int = setting(5, "Training epochs.", aliases=["num_train_epochs"], ge=1, le=1_000_000)
    max_train_steps: Optional[int] = setting(None, "Stop after this many optimizer steps (a step budget; the epochs "
                                             "needed to reach it replace --epochs).", ge=1, le=1_000_000_000)
    batch_size: int = setting(1, "Images per step on each device (the effective batch is batch x gradient accumulation "
                              "x devices x nodes).", aliases=["batch", "train_batch_size"], ge=1)
    gradient_accumulation: int = setting(1, "Micro-batches per optimizer step.", aliases=["gradient_accumulation_steps"], ge=1)
    learning_rate: float = setting(1e-4, "AdamW learning rate.", aliases=["lr"], gt=0, le=10)
    scale_lr: bool = setting(False, "Multiply the learning rate by the effective batch (batch x accumulation x devices).")
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = setting("constant", "Learning-rate schedule.")
    lr_warmup_steps: int = setting(0, "Warm-up steps of the schedule.", ge=0)
    weight_decay: float = setting(1e-2, "AdamW weight decay.", aliases=["adam_weight_decay"], ge=0)
    max_grad_norm: float = setting(1.0, "Gradient clipping norm.", gt=0)
    precision: Literal["no", "fp16", "bf16"] = setting(
        "no", "Frozen weights in fp16/bf16 under autocast (LoRA weights stay fp32); fp16 needs a CUDA GPU.",
        aliases=["mixed_precision"])
    gradient_checkpointing: bool = setting(False, "Recompute UNet activations in the backward pass (less memory, slower).")
    snr_gamma: Optional[float] = setting(None, "Min-SNR loss weighting gamma (5.0 is the paper's value); off when not given.", gt=0)
    noise_offset: float = setting(0.0, "Noise offset (0.05-0.1 helps very dark/bright images such as line drawings).", ge=0)
    prediction_type: Optional[Literal["epsilon", "v_prediction"]] = setting(
        None, "Training target (default: the base scheduler's prediction_type).")
    # --- checkpoints and validation
    checkpoint_every: int = setting(100, "Save lora_model/checkpoint-N every N optimizer steps.",
                                    aliases=["checkpointing_steps", "checkpoint_steps"], ge=1)
    checkpoints_total_limit: Optional[int] = setting(None, "Keep at most this many checkpoints (oldest pruned).", ge=1)
    validation_prompt: list[str] = setting(default_factory=lambda: [DEFAULT_VALIDATION_PROMPT],
                                           description="Prompt(s) of the validation images (repeatable).")
    validation_every: int = setting(1, "Validation images every N epochs (0: never).", aliases=["validation_epochs"], ge=0)
    num_validation_images: int = setting(2, "Images per validation prompt.", ge=1)
    validation_steps: int = setting(25, "Denoising steps of the validation images.", ge=1)
    # --- machine
    device: str = setting("auto", "auto, cuda, cuda:N, mps or cpu.")
    devices: DeviceCount = setting("1", DEVICES_HELP, metavar="N|auto")
    num_nodes: int = setting(1, NUM_NODES_HELP, ge=1)
    # No fsdp: every device holds the whole frozen UNet and trains a few MB of adapter, which is what
    # ddp does; fsdp would shard the frozen weights and scatter the adapter state this recipe saves.
    strategy: Literal["auto", "ddp"] = setting("auto", "How several devices share the work: auto (ddp when > 1 "
                                               "device) or ddp (each device holds the frozen model).")
    seed: int = setting(42, "Seed of the data order, noise, timesteps and validation images.")
    oom_recovery: bool = setting(True, "On out-of-memory: halve the batch (accumulating to keep the effective batch), "
                                 "then gradient checkpointing, then a smaller resolution; resumed from the last checkpoint (one process only: "
                                 "with several devices a smaller --batch-size is for you to give).")
    tensorboard: bool = setting(True, "Write TensorBoard scalars and validation images.")
    tracking: TrackingSettings = tracking_section()

    @field_validator("precision", mode="before")
    @classmethod
    def _lightning_precision(cls, value):
        # the other recipes' (Lightning's) spellings mean the same thing here
        return {"32": "no", "32-true": "no", "16-mixed": "fp16", "bf16-mixed": "bf16"}.get(str(value), value)

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError(f"must be a multiple of 8 (got {value}; try {max(8, value // 8 * 8)})")
        return value

    @field_validator("target_modules")
    @classmethod
    def _some_targets(cls, value: list[str]) -> list[str]:
        if not value or any(not v.strip() for v in value):
            raise ValueError("give at least one UNet module name, e.g. to_q")
        return value


class GenerateConfig(RecipeConfig):
    width: int = setting(10, "Plan width in grid cells (image width = min(width x 80, 1024) px).", ge=1, le=50, short="-W")
    height: int = setting(10, "Plan height in grid cells (image height = min(height x 80, 1024) px).", ge=1, le=50, short="-H")
    lora: Optional[str] = setting(None, "Trained adapter: lora_model/final, a lora_model/checkpoint-N, the lora_model "
                                  "folder or the run folder (its final/, else its newest checkpoint); default: the "
                                  "base model alone.", metavar="DIR")
    pretrained_model: Optional[str] = setting(
        None, "Base pipeline (Hub id or folder; default: the base model the adapter was trained on).",
        aliases=["pretrained_model_name_or_path", "base_model", "model"], metavar="ID_OR_DIR")
    steps: int = setting(30, "Denoising steps (DPM-Solver multistep).", aliases=["num_inference_steps"], ge=1, le=200)
    guidance: float = setting(7.5, "Classifier-free guidance scale.", aliases=["guidance_scale"], ge=0)
    seed: int = setting(42, "Seed of the generation.")
    num_images: int = setting(1, "Images to generate (plan.png, plan_2.png, ...).", ge=1, le=16)
    output: str = setting("plan.png", "Output PNG path.", aliases=["out"], short="-o", metavar="FILE")
    prompt: Optional[str] = setting(None, "Prompt instead of the built-in floor-plan prompt.")
    negative_prompt: Optional[str] = setting(None, "Negative prompt instead of the built-in one.")
    lora_scale: float = setting(1.0, "Strength of the adapter.", ge=0, le=100)
    device: str = setting("auto", "auto, cuda, cuda:N, mps or cpu.")
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = setting("auto", "Weights dtype (auto: fp16 on CUDA, else fp32).")
    invert_dark: bool = setting(True, "Invert an image that comes out dark (white lines on black) to black on white.")
