"""The resource plan of a detect run: tier table + free GPU memory + explicit values.

Order (later wins): the tier's row of :data:`TIER_TABLE` (:data:`FIXED_PLAN` when ``auto_scale``
is off) < a batch computed from free GPU memory (on CUDA, when no batch was given) < values that
are set (config fields, ``key=value`` Ultralytics arguments). Every value remembers where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from kitaeru.core.device import DeviceInfo, GpuTier, parse_tier
from kitaeru.core.resources import Plan, batch_from_free_memory, plan_resources

from .config import FIXED_PLAN, MODEL_MEMORY, PLAN_KEYS, TIER_TABLE, TrainConfig
from .model_source import model_scale

DEFAULT_SCALE = "m"  # memory figures for a model whose size cannot be told from its name


@dataclass
class ResourcePlan:
    """The values chosen for one run, the tier behind them, and the source of each value."""

    tier: GpuTier
    tier_source: str
    auto_scale: bool
    values: Plan
    sources: dict[str, str]
    device: DeviceInfo
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier.value,
            "tier_source": self.tier_source,
            "auto_scale": self.auto_scale,
            "device": self.device.as_dict(),
            "values": dict(self.values),
            "sources": dict(self.sources),
            "notes": list(self.notes),
        }

    def rows(self) -> list[tuple[str, Any, str]]:
        return [(k, self.values[k], self.sources.get(k, "")) for k in PLAN_KEYS]


def explicit_values(config: TrainConfig) -> dict[str, Any]:
    """Plan knobs that are set: config fields, then ``key=value`` Ultralytics arguments."""
    out = {k: config.plan_value(k) for k in PLAN_KEYS if config.plan_value(k) is not None}
    out.update({k: v for k, v in config.ultralytics.items() if k in PLAN_KEYS and v is not None})
    return out


def free_memory_batch(free_gb: float, model: str, imgsz: int) -> int:
    """The guide's batch estimate: ``(free×0.85 − overhead)×1024 / (per_sample × (imgsz/640)²)``, 4–128, power of two."""
    overhead, per_sample = MODEL_MEMORY[model_scale(model) or DEFAULT_SCALE]
    return batch_from_free_memory(free_gb, overhead, per_sample, scale=(imgsz / 640) ** 2)


def plan_detect(config: TrainConfig, device: DeviceInfo) -> ResourcePlan:
    """Decide model, batch, imgsz, workers, cache, epochs and patience for this run."""
    requested_tier = parse_tier(config.gpu_tier)
    tier = requested_tier or device.tier
    tier_source = "--gpu-tier" if requested_tier else f"detected ({device.name})"
    values: Plan = dict(FIXED_PLAN)
    sources = {k: "fixed (no auto-scale)" for k in PLAN_KEYS}
    explicit = explicit_values(config)
    notes: list[str] = []
    if config.auto_scale:
        tier_row = plan_resources(TIER_TABLE, tier)
        values.update(tier_row)
        sources.update({k: f"tier {tier.value}" for k in tier_row})
        if "batch" not in explicit and device.type == "cuda" and device.free_gb:
            model = explicit.get("model", values["model"])
            imgsz = int(explicit.get("imgsz", values["imgsz"]))
            values["batch"] = free_memory_batch(device.free_gb, model, imgsz)
            sources["batch"] = f"free memory ({device.free_gb:.1f} GB)"
    else:
        notes.append("auto-scaling off: the guide's competition values, unless set")
    values.update(explicit)
    sources.update({k: "explicit" for k in explicit})
    if device.type == "cpu" and values.get("workers"):
        notes.append("Ultralytics loads data in the main process on CPU (workers are used on GPU only)")
    return ResourcePlan(tier, tier_source, config.auto_scale, values, sources, device, notes)


def fit_plan(values: Mapping[str, Any]) -> Plan:
    """The knobs the OOM ladder turns (a copy of the plan's)."""
    return {k: values[k] for k in ("model", "batch", "imgsz", "workers", "cache")}
