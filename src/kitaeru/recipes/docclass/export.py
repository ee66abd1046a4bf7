"""``kitaeru docclass export`` (alias ``export-onnx``): the inference branch of a checkpoint to ONNX,
checked against PyTorch, with a sidecar JSON that carries preprocessing, feature size, validation
metrics and the unknown threshold."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from kitaeru.core.console import info
from kitaeru.core.errors import ConfigError
from kitaeru.core.storage import atomic_write_json
from kitaeru.recipes.docclass.documents import IMAGENET_MEAN, IMAGENET_STD, preprocess_images

from .config import DocclassConfig, ExportConfig
from .inference import sidecar_path


def real_inputs_for(image_size: int, images: Sequence[str] | None = None, count: int = 4) -> np.ndarray:
    """Real document pictures for the parity check: the given files, else generated documents."""
    from PIL import Image

    if images:
        from kitaeru.data.images import open_image

        pictures: list[Image.Image] = [open_image(p, min_side=2 * image_size) for p in images]
    else:
        from kitaeru.recipes.docclass.sample_documents import DOCUMENT_KINDS, render_document

        pictures = [render_document(DOCUMENT_KINDS[i % len(DOCUMENT_KINDS)], 7_000 + i) for i in range(count)]
    return preprocess_images(pictures, image_size)


def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    config: DocclassConfig | None = None,
    config_name: str | None = None,
    images: Sequence[str] | None = None,
    tolerance: float = 1e-4,
    checkpoint=None,
) -> dict[str, Any]:
    """Export ``checkpoint_path``'s network as ``config.onnx`` says (default: the checkpoint's config).

    A ``config`` whose architecture or image size differs from the checkpoint's is refused. Returns
    the sidecar's content (export report included); the sidecar is written beside the ONNX file.
    """
    from kitaeru.export.onnx import export_onnx

    from .checkpoint import check_compatible, load_network, read_checkpoint

    checkpoint = checkpoint or read_checkpoint(checkpoint_path)
    if config is not None:
        check_compatible(checkpoint, config)
    else:
        config = checkpoint.config
    net = load_network(checkpoint)
    out = Path(out) if out else checkpoint.path.with_suffix(".onnx")
    spec = config.onnx
    input_name = spec.input_names[0]
    real = real_inputs_for(config.data.image_size, images)
    report = export_onnx(net, spec, out, real_inputs={input_name: real}, tolerance=tolerance)
    sidecar = {
        "recipe": "docclass",
        "config_name": config_name or checkpoint.config.name,
        "checkpoint": str(checkpoint.path),
        "image_size": config.data.image_size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "embedding_dim": config.model.embedding_dim,
        "input_name": input_name,
        "output_name": spec.output_names[0],
        "unknown_threshold": checkpoint.threshold,
        "threshold_fpr": checkpoint.info.get("threshold_fpr"),
        "val_metrics": checkpoint.info.get("val_metrics"),
        "classes": {k: checkpoint.info.get(k) for k in ("templates", "orientations", "num_classes")},
        # The photos it was trained on, so 'docclass evaluate' of the ONNX model draws the same kind.
        "augment": checkpoint.config.augment.model_dump(mode="json"),
        "export": report.as_dict(),
    }
    atomic_write_json(sidecar_path(out), sidecar)
    info(f"wrote {out} and {sidecar_path(out).name} (max |onnxruntime − PyTorch| = {report.max_abs_diff:.2e})")
    return sidecar


def export_config(config: ExportConfig, checkpoint_config: DocclassConfig) -> DocclassConfig | None:
    """The checkpoint's config with the mode's settings (preset, --config, key=value, --image-size) on
    top, or None when none were given (the checkpoint's own config is used as it is)."""
    from pydantic import ValidationError

    from kitaeru.core.config import deep_merge, format_validation_error

    if not config.settings and config.image_size is None:
        return None
    data = deep_merge(checkpoint_config.model_dump(mode="json"), config.settings)
    if config.image_size is not None:
        data["image_size"] = config.image_size
    try:
        return DocclassConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "export settings over the checkpoint's config")) from None


def export_model(config: ExportConfig) -> dict[str, Any]:
    """``docclass export``: the checkpoint's network as its config's (or the given) ``onnx:`` says."""
    from .checkpoint import read_checkpoint

    checkpoint = read_checkpoint(config.checkpoint, trust=config.trust_checkpoint, trust_flag="--trust-checkpoint")
    net_config = export_config(config, checkpoint.config)
    name = net_config.name if net_config is not None and "name" in config.settings else None
    return export_checkpoint(checkpoint.path, config.output, config=net_config, config_name=name, images=config.images or None,
                             tolerance=config.tolerance, checkpoint=checkpoint)
