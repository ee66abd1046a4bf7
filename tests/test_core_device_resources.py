"""Device resolution, GPU tiers, resource plans and the out-of-memory ladder."""

from __future__ import annotations

import pytest
import torch

from kitaeru.core.device import GpuTier, parse_tier, resolve_device, tier_from_memory
from kitaeru.core.errors import DeviceError
from kitaeru.core.resources import (
    OutOfMemoryGiveUp,
    batch_from_free_memory,
    disable_cache,
    fewer_workers,
    fit_with_oom_recovery,
    halve_batch,
    is_out_of_memory,
    plan_resources,
    smaller_image,
    smaller_model,
)


@pytest.mark.parametrize(
    "gb,tier",
    [(None, GpuTier.CPU), (4, GpuTier.LOW), (5.99, GpuTier.LOW), (6, GpuTier.MEDIUM), (11.9, GpuTier.MEDIUM),
     (12, GpuTier.HIGH), (23.9, GpuTier.HIGH), (24, GpuTier.WORKSTATION), (80, GpuTier.WORKSTATION)],
)
def test_tier_boundaries(gb, tier):
    assert tier_from_memory(gb) is tier


def test_cpu_and_auto_resolve_here():
    info = resolve_device("cpu")
    assert info.device == "cpu" and info.tier is GpuTier.CPU
    auto = resolve_device("auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto.device.startswith(expected) or auto.device == "mps"


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has a GPU")
def test_cuda_without_gpu_is_clear_error():
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_unknown_device_and_tier():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="unknown tier 'huge'"):
        parse_tier("huge")
    assert parse_tier("High") is GpuTier.HIGH


def test_plan_explicit_values_win():
    table = {GpuTier.CPU: {"batch": 4, "imgsz": 320, "workers": 2}}
    plan = plan_resources(table, GpuTier.CPU, {"batch": 16, "imgsz": None})
    assert plan == {"batch": 16, "imgsz": 320, "workers": 2}


def test_batch_from_free_memory_matches_seed_formula():
    # (20*0.85 - 2.5)*1024 / (380*1) = 39.07 -> 32 (power of two)
    assert batch_from_free_memory(20, 2.5, 380) == 32
    assert batch_from_free_memory(1, 2.5, 380) == 4  # clamped low
    assert batch_from_free_memory(500, 1.2, 180) == 128  # clamped high
    assert batch_from_free_memory(20, 2.5, 380, scale=(800 / 640) ** 2) == 16


def test_oom_detection_through_wrappers():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    try:
        try:
            raise RuntimeError("CUDNN_STATUS_ALLOC_FAILED")
        except RuntimeError as inner:
            raise ValueError("trainer failed") from inner
    except ValueError as wrapped:
        assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(ValueError("bad label"))


def test_ladder_steps():
    plan = {"batch": 16, "imgsz": 640, "cache": True, "workers": 8, "model": "yolov8x.pt"}
    assert halve_batch()(plan)[0]["batch"] == 8
    assert halve_batch()({"batch": 4}) is None
    assert smaller_image()(plan)[0]["imgsz"] == 480
    assert smaller_image()({"imgsz": 320}) is None
    assert disable_cache()(plan)[0]["cache"] is False
    assert fewer_workers()(plan)[0]["workers"] == 4
    chain = {"yolov8x": "yolov8l", "yolov8l": "yolov8m"}
    assert smaller_model(chain)(plan)[0]["model"] == "yolov8l.pt"


def test_fit_recovers_and_resumes_with_recorded_steps():
    calls = []

    def fit(plan, resume):
        calls.append((plan["batch"], plan["imgsz"], resume))
        if plan["batch"] > 4 or plan["imgsz"] > 480:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return "done"

    seen = []
    result, plan, steps = fit_with_oom_recovery(fit, {"batch": 8, "imgsz": 640}, max_steps=3, on_step=seen.append)
    assert result == "done"
    assert plan == {"batch": 4, "imgsz": 480}
    assert [s.step for s in steps] == ["halve_batch", "smaller_image"]
    assert calls[0][2] is False and all(c[2] for c in calls[1:])  # resumed, never restarted
    assert seen == steps
    assert steps[0].as_dict()["change"] == "batch 8 -> 4"


def test_fit_gives_up_clearly():
    def always_oom(plan, resume):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(OutOfMemoryGiveUp, match="after 2 recovery steps"):
        fit_with_oom_recovery(always_oom, {"batch": 64, "imgsz": 640}, max_steps=2)
    with pytest.raises(OutOfMemoryGiveUp, match="disabled"):
        fit_with_oom_recovery(always_oom, {"batch": 64}, enabled=False)
    with pytest.raises(ValueError):
        fit_with_oom_recovery(lambda p, r: (_ for _ in ()).throw(ValueError("not oom")), {"batch": 8})
