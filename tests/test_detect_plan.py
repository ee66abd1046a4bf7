"""detect: the tier table, the resource plan, the OOM ladder's order, model resolution, presets."""

from __future__ import annotations

import pytest

from kitaeru.core.device import DeviceInfo, GpuTier
from kitaeru.core.config import load_config, validate_preset
from kitaeru.core.errors import ConfigError, DataError
from kitaeru.core.resources import OutOfMemoryGiveUp, fit_with_oom_recovery
from kitaeru.recipes.detect.config import RECIPE, TIER_TABLE, TrainConfig
from kitaeru.recipes.detect.plan import fit_plan, free_memory_batch, plan_detect

CPU = DeviceInfo(device="cpu", requested="auto", tier=GpuTier.CPU, name="cpu")


def gpu(total_gb: float, free_gb: float) -> DeviceInfo:
    from kitaeru.core.device import tier_from_memory

    return DeviceInfo(device="cuda", requested="auto", tier=tier_from_memory(total_gb), name="test-gpu",
                      total_gb=total_gb, free_gb=free_gb, bf16=True)


def config(**values) -> TrainConfig:
    return load_config(TrainConfig, RECIPE, overrides={"data_dir": "data.yaml", **values})


def test_tier_table_is_the_seeds():
    rows = {t.value: (r["model"], r["batch"], r["imgsz"], r["workers"], r["cache"], r["epochs"], r["patience"])
            for t, r in TIER_TABLE.items()}
    assert rows == {
        "low": ("yolov8s.pt", 8, 480, 4, False, 40, 8),
        "medium": ("yolov8m.pt", 16, 640, 8, True, 50, 10),
        "high": ("yolov8l.pt", 32, 640, 8, True, 50, 10),
        "workstation": ("yolov8x.pt", 64, 800, 8, True, 50, 10),
        "cpu": ("yolov8n.pt", 4, 320, 2, False, 30, 5),
    }


def test_cpu_plan_comes_from_the_cpu_tier():
    plan = plan_detect(config(), CPU)
    assert plan.tier is GpuTier.CPU and plan.tier_source.startswith("detected")
    assert plan.values == {"model": "yolov8n.pt", "batch": 4, "imgsz": 320, "workers": 2, "cache": False,
                           "epochs": 30, "patience": 5}
    assert set(plan.sources.values()) == {"tier cpu"}


def test_gpu_tier_flag_picks_the_row_and_explicit_values_win():
    plan = plan_detect(config(gpu_tier="high", epochs=3, image_size=320), CPU)
    assert plan.tier is GpuTier.HIGH and plan.tier_source == "--gpu-tier"
    assert plan.values["model"] == "yolov8l.pt" and plan.values["batch"] == 32
    assert plan.values["epochs"] == 3 and plan.values["imgsz"] == 320
    assert plan.sources["epochs"] == "explicit" and plan.sources["model"] == "tier high"


def test_passthrough_plan_keys_count_as_explicit():
    plan = plan_detect(config(ultralytics={"batch": 2, "lr0": 0.01}), CPU)
    assert plan.values["batch"] == 2 and plan.sources["batch"] == "explicit"


def test_free_memory_refines_the_batch_on_cuda():
    # (10 × 0.85 − 3.5) × 1024 / (550 × 1) = 9.3 → 8 for yolov8l at 640 px.
    assert free_memory_batch(10.0, "yolov8l.pt", 640) == 8
    # yolov8n at 320 px: (20 × 0.85 − 1.2) × 1024 / (180 × 0.25) = 359 → clamped to 128.
    assert free_memory_batch(20.0, "yolov8n.pt", 320) == 128
    plan = plan_detect(config(), gpu(total_gb=16, free_gb=10))
    assert plan.tier is GpuTier.HIGH
    assert plan.values["batch"] == 8 and plan.sources["batch"].startswith("free memory")
    assert plan_detect(config(batch_size=12), gpu(total_gb=16, free_gb=10)).values["batch"] == 12


def test_no_auto_scale_uses_the_competition_values():
    plan = plan_detect(config(auto_scale=False), CPU)
    assert plan.values["model"] == "yolov8m.pt" and plan.values["batch"] == 16 and plan.values["imgsz"] == 640
    assert set(plan.sources.values()) == {"fixed (no auto-scale)"}


def test_presets_load_and_fast_wins_over_the_tier():
    competition = validate_preset(TrainConfig, RECIPE, "competition")
    assert competition.name == "competition"
    assert (competition.train.optimizer, competition.train.lr0, competition.train.amp, competition.train.close_mosaic) == (
        "AdamW", 0.001, True, 10)
    # Each knob once: the plan knobs are top-level settings, left to the tier by this preset.
    assert all(competition.plan_value(k) is None for k in ("model", "batch", "imgsz", "workers", "cache", "epochs"))
    fast = validate_preset(TrainConfig, RECIPE, "fast")
    plan = plan_detect(fast.model_copy(update={"data_dir": "d.yaml"}), gpu(total_gb=48, free_gb=40))
    assert fast.name == "fast"
    assert plan.values["model"] == "yolov8n.pt" and plan.values["epochs"] == 10


def test_bad_values_are_one_line_config_errors():
    for values, word in (({"epochs": 0}, "epochs"), ({"batch_size": -3}, "batch"), ({"gpu_tier": "huge"}, "gpu_tier"),
                         ({"export": "tflite"}, "export"), ({"llrd_decay_rate": 1.5}, "llrd_decay_rate")):
        with pytest.raises(ConfigError) as err:
            config(**values)
        assert word in str(err.value) and "\n" not in str(err.value)


def test_ladder_order_halve_image_cache_workers_model():
    from kitaeru.recipes.detect.session import detect_ladder

    calls = []

    def always_oom(plan, resume):
        calls.append((dict(plan), resume))
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    start = fit_plan({"model": "yolov8m.pt", "batch": 16, "imgsz": 640, "workers": 8, "cache": True,
                      "epochs": 1, "patience": 1})
    with pytest.raises(OutOfMemoryGiveUp) as err:
        fit_with_oom_recovery(always_oom, start, ladder=detect_ladder(), max_steps=10)
    changes = [c[0] for c in calls]
    assert [c["batch"] for c in changes[:3]] == [16, 8, 4]
    assert [c["imgsz"] for c in changes[2:5]] == [640, 480, 320]
    assert changes[5]["cache"] is False and changes[4]["cache"] is True
    assert [c["workers"] for c in changes[5:10]] == [8, 4, 2, 1, 0]
    assert changes[10]["model"] == "yolov8s.pt" and changes[10]["batch"] == 4
    assert [r for _, r in calls] == [False] + [True] * 10  # every retry resumes
    assert "10 recovery steps" in str(err.value)


def test_smaller_model_step_skips_a_custom_path(tmp_path):
    from kitaeru.recipes.detect.session import named_model_step

    step = named_model_step()
    assert step({"model": "yolov8x.pt"})[0]["model"] == "yolov8l.pt"
    assert step({"model": str(tmp_path / "my_yolov8m.pt")}) is None
    assert step({"model": "custom.pt"}) is None


def test_model_resolution(tmp_path):
    from kitaeru.recipes.detect.model_source import model_scale, resolve_model
    from kitaeru.recipes.detect.ultralytics_env import prepare_ultralytics

    prepare_ultralytics()
    arch = resolve_model("yolov8n.yaml", offline=True)
    assert arch.kind == "architecture" and arch.load == "yolov8n.yaml"
    named = resolve_model("yolov8s", offline=True)
    assert named.kind == "architecture" and named.load == "yolov8s.yaml" and "random init" in named.note
    assert resolve_model("yolov8s.pt", offline=False).kind == "download"
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert resolve_model(str(weights), offline=True).kind == "weights"
    with pytest.raises(DataError, match="not found"):
        resolve_model(str(tmp_path / "missing.pt"), offline=True)
    with pytest.raises(ConfigError, match="expected .pt"):
        resolve_model("model.onnx", offline=True)
    assert model_scale("runs/yolov8x.pt") == "x" and model_scale("best.pt") is None
