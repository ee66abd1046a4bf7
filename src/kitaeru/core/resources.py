"""Resource planning from a per-recipe tier table, and the out-of-memory recovery ladder.

A *plan* is a plain dict of the knobs a recipe can turn (``batch``, ``imgsz``, ``workers``,
``cache``, ``model``, ...). Each recipe owns its tier table; this module only combines
table + free memory + explicit user values, and walks the ladder when a fit runs out of memory.
The ladder never restarts a run: every step hands ``resume=True`` to the fit function, which
continues from its last checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .device import GpuTier
from .errors import KitaeruError

Plan = dict[str, Any]


def plan_resources(
    table: Mapping[GpuTier, Mapping[str, Any]],
    tier: GpuTier,
    explicit: Mapping[str, Any] | None = None,
) -> Plan:
    """The tier's row of ``table`` with every explicitly given (non-``None``) value on top.

    Explicit values always win: a user who says ``--batch 8`` gets 8 whatever the tier says.
    """
    if tier not in table:
        raise KitaeruError(f"no resource plan for tier '{tier.value}'")
    plan: Plan = dict(table[tier])
    plan.update({k: v for k, v in (explicit or {}).items() if v is not None})
    return plan


def batch_from_free_memory(
    free_gb: float,
    overhead_gb: float,
    per_sample_mb: float,
    *,
    scale: float = 1.0,
    safety: float = 0.85,
    lo: int = 4,
    hi: int = 128,
) -> int:
    """Largest power-of-two batch that fits: ``(free×safety − overhead)×1024 / (per_sample×scale)``,
    clamped to ``[lo, hi]``. ``scale`` carries input-size effects such as ``(imgsz/640)²``."""
    budget_mb = (free_gb * safety - overhead_gb) * 1024
    raw = budget_mb / max(per_sample_mb * scale, 1e-6)
    if raw < lo:
        return lo
    return max(lo, min(hi, 2 ** int(math.floor(math.log2(raw)))))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/cuDNN/MPS out-of-memory errors, including ones wrapped by a library."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        text = str(exc).lower()
        if name == "OutOfMemoryError" or "out of memory" in text or "cudnn_status_alloc_failed" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# ---- ladder steps: each returns (new plan, description) or None when it cannot apply ----
Step = Callable[[Plan], "tuple[Plan, str] | None"]


def halve_batch(min_batch: int = 4, key: str = "batch") -> Step:
    def step(plan: Plan):
        batch = int(plan.get(key, 0) or 0)
        if batch <= min_batch:
            return None
        new = max(min_batch, batch // 2)
        return {**plan, key: new}, f"{key} {batch} -> {new}"

    step.__name__ = "halve_batch"
    return step


def smaller_image(sizes: Sequence[int] = (1280, 1024, 800, 640, 480, 320), key: str = "imgsz") -> Step:
    def step(plan: Plan):
        size = plan.get(key)
        if size is None:
            return None
        smaller = [s for s in sizes if s < int(size)]
        if not smaller:
            return None
        return {**plan, key: smaller[0]}, f"{key} {size} -> {smaller[0]}"

    step.__name__ = "smaller_image"
    return step


def disable_cache(key: str = "cache") -> Step:
    def step(plan: Plan):
        if not plan.get(key):
            return None
        return {**plan, key: False}, f"{key} {plan[key]} -> False"

    step.__name__ = "disable_cache"
    return step


def fewer_workers(min_workers: int = 0, key: str = "workers") -> Step:
    def step(plan: Plan):
        workers = int(plan.get(key, 0) or 0)
        if workers <= min_workers:
            return None
        new = max(min_workers, workers // 2)
        return {**plan, key: new}, f"{key} {workers} -> {new}"

    step.__name__ = "fewer_workers"
    return step


def smaller_model(chain: Mapping[str, str], key: str = "model") -> Step:
    """Step the model down a chain such as ``{"yolov8x": "yolov8l", ...}`` (matched by substring)."""

    def step(plan: Plan):
        current = str(plan.get(key, ""))
        for big, small in chain.items():
            if big in current:
                return {**plan, key: current.replace(big, small)}, f"{key} {current} -> {current.replace(big, small)}"
        return None

    step.__name__ = "smaller_model"
    return step


DEFAULT_LADDER: tuple[Step, ...] = (halve_batch(), smaller_image(), disable_cache(), fewer_workers())


@dataclass
class OomRecovery:
    """One step taken by the ladder, as recorded in ``training_result.json`` (``oom_recoveries``)."""

    attempt: int
    step: str
    change: str
    error: str
    plan: Plan = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"attempt": self.attempt, "step": self.step, "change": self.change, "error": self.error, "plan": self.plan}


class OutOfMemoryGiveUp(KitaeruError):
    """The ladder ran out of steps (or recovery was disabled)."""


def fit_with_oom_recovery(
    fit: Callable[[Plan, bool], Any],
    plan: Plan,
    *,
    ladder: Sequence[Step] = DEFAULT_LADDER,
    max_steps: int = 3,
    enabled: bool = True,
    on_step: Callable[[OomRecovery], None] | None = None,
) -> tuple[Any, Plan, list[OomRecovery]]:
    """Run ``fit(plan, resume)``; on out-of-memory, take the next applicable ladder step and resume.

    Steps are tried in ladder order; a step that cannot apply (batch already at the minimum, no
    smaller size...) is skipped for the next one. At most ``max_steps`` recoveries, then
    :class:`OutOfMemoryGiveUp` with the whole history. Returns ``(result, final plan, steps)``.
    """
    steps: list[OomRecovery] = []
    resume = False
    while True:
        try:
            return fit(plan, resume), plan, steps
        except BaseException as exc:  # noqa: BLE001 - we re-raise everything that is not OOM
            if not is_out_of_memory(exc):
                raise
            failure = exc
        # Outside the handler: the failed attempt's traceback (and the GPU tensors its frames
        # hold) is released only once we have left the except block.
        message = str(failure).splitlines()[0][:200] if str(failure) else type(failure).__name__
        failure.__traceback__ = None
        _free_accelerator_memory()
        if not enabled:
            raise OutOfMemoryGiveUp(
                f"out of memory with plan {plan} and OOM recovery disabled (--no-oom-recovery); "
                "lower --batch or the image size"
            ) from failure
        if len(steps) >= max_steps:
            raise OutOfMemoryGiveUp(
                f"still out of memory after {len(steps)} recovery steps "
                f"({'; '.join(s.change for s in steps)}); lower the batch/image size or use a smaller model"
            ) from failure
        for candidate in ladder:
            applied = candidate(plan)
            if applied is not None:
                plan, change = applied
                record = OomRecovery(len(steps) + 1, candidate.__name__, change, message, dict(plan))
                steps.append(record)
                if on_step is not None:
                    on_step(record)
                break
        else:
            raise OutOfMemoryGiveUp(
                f"out of memory and no recovery step applies to plan {plan}; use a smaller model or device"
            ) from failure
        del failure
        resume = True


def _free_accelerator_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
