"""GPU paths of the core (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.gpu


def test_cuda_device_has_tier_and_memory():
    from kitaeru.core.device import GpuTier, resolve_device, tier_from_memory

    info = resolve_device("cuda")
    assert info.type == "cuda" and info.total_gb and info.free_gb
    assert info.tier is tier_from_memory(info.total_gb) and info.tier is not GpuTier.CPU


def test_encoder_on_cuda_matches_cpu():
    from kitaeru.models.image_encoders import create_image_encoder

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cpu = create_image_encoder("torchvision:mobilenet_v3_small", pretrained=None)
    gpu = create_image_encoder("torchvision:mobilenet_v3_small", pretrained=None, device="cuda")
    gpu.module.load_state_dict(cpu.module.state_dict())
    a, b = cpu.encode_images([picture]), gpu.encode_images([picture])
    cos = float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos > 0.99  # bf16/fp16 autocast on GPU: close, not identical
    assert torch.cuda.is_available()
