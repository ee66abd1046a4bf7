"""Create a search backend (called once at start-up, by the app's lifespan handler)."""

from __future__ import annotations

from typing import Optional

from .backend import SearchBackend


def load_backend(*, output_dir: Optional[str] = None, index: Optional[str] = None, model: Optional[str] = None,
                 pretrained: Optional[str] = None, data_dir: Optional[str] = None, device: str = "cpu",
                 threads: Optional[int] = None) -> SearchBackend:
    """The index backend for ``index``, the multimodal backend for ``output_dir``."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    if index:
        from .index_backend import IndexBackend

        return IndexBackend.load(index, model=model, pretrained=pretrained, device=device, data_dir=data_dir)
    from .multimodal_backend import MultimodalBackend

    return MultimodalBackend.load(output_dir, device=device, data_dir=data_dir)
