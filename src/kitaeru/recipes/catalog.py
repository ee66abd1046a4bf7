"""The jobs kitaeru has and each one's line of help, declared once.

Light on purpose: ``kitaeru --help`` and ``import kitaeru`` read this table without importing any
recipe, and every recipe's ``RECIPE`` takes its help line from here, so the root help and
``kitaeru <job> --help`` can never say two different things. A job ``name`` lives in the package
``kitaeru.recipes.<name>``.
"""

from __future__ import annotations

JOBS: dict[str, str] = {
    "multimodal": "Contrastive text ↔ image (↔ time-series) scene embeddings: train, evaluate, search.",
    "embed": "Embed images (or texts) with a ViT/CNN/CLIP encoder into Parquet or .npy.",
    "index": "Build, extend, search and evaluate Faiss indexes (flat / ivfpq / hnsw / auto) over embeddings.",
    "serve": "Serve text/image search over a multimodal output or a Faiss index, and floor-plan generation (FastAPI + uvicorn).",
    "map": "Draw a UMAP map (PNG, interactive HTML, JSON) of embeddings or of a multimodal vector DB.",
    "detect": "Fine-tune YOLOv8 on Ultralytics (GPU-tier plans, OOM recovery, TensorBoard, LLRD, copy-paste), "
              "then validate, predict and export to ONNX.",
    "docclass": "Document-type recognition by metric learning: train, evaluate, export (ONNX), register templates, classify photos.",
    "lora": "Floor-plan LoRA for Stable Diffusion: prepare captions, train (resume, checkpoints), generate plans.",
    "runs": "List training runs and their status; a run whose process died shows as 'died' with its resume command.",
    "ui": "The dashboard (Streamlit): runs, training curves, start/stop trainings, map & search, floor plans.",
}


def job_module(name: str) -> str:
    """The package that declares job ``name``'s ``RECIPE``."""
    return f"kitaeru.recipes.{name}"
