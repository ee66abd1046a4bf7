"""Create the backend a :class:`~kitaeru.serve.config.ServeConfig` asks for (called once at start-up)."""

from __future__ import annotations

from .backend import SearchBackend
from .config import ServeConfig


def load_backend(cfg: ServeConfig, device: str) -> SearchBackend:
    """The index backend for ``--index``, the multimodal backend for ``--output-dir``."""
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    if cfg.index:
        from .index_backend import IndexBackend

        return IndexBackend.load(cfg.index, model=cfg.model, pretrained=cfg.pretrained, device=device,
                                 data_dir=cfg.data_dir)
    from .multimodal_backend import MultimodalBackend

    return MultimodalBackend.load(cfg.output_dir, device=device, data_dir=cfg.data_dir)
