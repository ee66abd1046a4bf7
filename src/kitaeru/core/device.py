"""Device selection and the GPU tier.

``--device auto`` picks the best available accelerator (cuda, then mps, then cpu); asking for a
device that is not there is a :class:`DeviceError`, never a silent fall-back. The tier classifies
the GPU by its memory, the way the YOLO guide did, so every recipe can size its work from one table.
"""

from __future__ import annotations

import enum
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import DeviceError

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
NO_CUDA = "no CUDA GPU is available on this machine (use --device cpu or auto)"


def cuda_gpus_visible() -> int | None:
    """How many CUDA GPUs this process could use, told from the NVIDIA driver's files and
    ``CUDA_VISIBLE_DEVICES`` in microseconds: no torch import and no CUDA initialisation (which must
    not happen before data-loader processes are forked). None where files cannot tell (not Linux,
    or WSL, whose GPUs appear only through /dev/dxg)."""
    if not sys.platform.startswith("linux") or Path("/dev/dxg").exists():
        return None
    present = max(len(list(Path("/proc/driver/nvidia/gpus").glob("*"))),
                  sum(1 for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)))
    if not present and (Path("/etc/nv_tegra_release").exists() or Path("/dev/nvhost-ctrl").exists()):
        return None  # Jetson: an integrated GPU without the discrete driver's files
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    count = 0
    for item in visible.split(","):
        item = item.strip()
        if not item or item.startswith("-"):  # CUDA stops at the first invalid entry ("" or -1 hides all)
            break
        count += 1
    return min(present, count)


def check_device_available(requested: str, setting: str = "--device") -> None:
    """Refuse at once, before torch or any model loads, a CUDA/MPS device on a machine that has none
    (``cuda``, ``cuda:N``, Ultralytics' ``0,1`` / ``-1``, ``mps``), with the same one-line error as
    :func:`resolve_device`. Which GPU index exists is left to :func:`resolve_device` once torch is
    loaded: files alone can miscount (MIG instances, for one), and a wrong refusal is worse than a late one."""
    value = str(requested).strip().lower()
    if value == "mps" and sys.platform != "darwin":
        raise DeviceError(f"{setting} mps: Apple's MPS is only available on macOS (use --device cpu or auto)")
    wants_cuda = value.startswith("cuda") or re.fullmatch(r"-?\d+(,-?\d+)*", value.replace(" ", "")) is not None
    if wants_cuda and cuda_gpus_visible() == 0:
        raise DeviceError(f"{setting} {requested}: {NO_CUDA}")


class GpuTier(str, enum.Enum):
    """GPU classes by memory: LOW < 6 GB, MEDIUM 6–12, HIGH 12–24, WORKSTATION ≥ 24, and CPU."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    WORKSTATION = "workstation"
    CPU = "cpu"


def tier_from_memory(total_gb: float | None) -> GpuTier:
    """The tier of a GPU with ``total_gb`` of memory (``None`` = no GPU)."""
    if total_gb is None:
        return GpuTier.CPU
    if total_gb < 6:
        return GpuTier.LOW
    if total_gb < 12:
        return GpuTier.MEDIUM
    if total_gb < 24:
        return GpuTier.HIGH
    return GpuTier.WORKSTATION


@dataclass(frozen=True)
class DeviceInfo:
    """What was chosen and why, recorded in every run's ``training_result.json``."""

    device: str  # torch device string: "cuda", "cuda:1", "mps", "cpu"
    requested: str
    tier: GpuTier
    name: str  # GPU model name or "cpu"
    total_gb: float | None = None
    free_gb: float | None = None
    bf16: bool = False  # whether bf16 autocast is supported (Ampere+ or CPU)

    @property
    def type(self) -> str:
        return self.device.split(":")[0]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["tier"] = self.tier.value
        return out


def resolve_device(requested: str = "auto") -> DeviceInfo:
    """Resolve ``auto|cuda|cuda:N|mps|cpu`` to an available device, or raise a one-line error."""
    import torch

    req = (requested or "auto").strip().lower()
    base = req.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise DeviceError(f"--device: unknown device '{requested}' (choose from {', '.join(DEVICE_CHOICES)})")
    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if base == "auto":
        req = "cuda" if has_cuda else "mps" if has_mps else "cpu"
        base = req
    if base == "cuda":
        if not has_cuda:
            raise DeviceError(f"--device cuda: {NO_CUDA}")
        index = int(req.split(":")[1]) if ":" in req else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise DeviceError(f"--device {req}: only {torch.cuda.device_count()} CUDA device(s) present")
        free, total = torch.cuda.mem_get_info(index)
        # TF32 matmuls/convolutions on Ampere+: ~free speed for fp32 work (bf16 autocast covers the rest).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return DeviceInfo(
            device=f"cuda:{index}" if ":" in req else "cuda",
            requested=requested,
            tier=tier_from_memory(total / 1024**3),
            name=torch.cuda.get_device_name(index),
            total_gb=round(total / 1024**3, 2),
            free_gb=round(free / 1024**3, 2),
            bf16=torch.cuda.is_bf16_supported(),
        )
    if base == "mps":
        if not has_mps:
            raise DeviceError("--device mps: Apple MPS is not available on this machine")
        return DeviceInfo(device="mps", requested=requested, tier=GpuTier.MEDIUM, name="apple-mps")
    return DeviceInfo(device="cpu", requested=requested, tier=GpuTier.CPU, name="cpu", bf16=False)


def parse_tier(value: str | GpuTier | None) -> GpuTier | None:
    """Parse a ``--gpu-tier`` value with a clear error listing the choices."""
    if value is None or isinstance(value, GpuTier):
        return value
    try:
        return GpuTier(value.strip().lower())
    except ValueError:
        choices = ", ".join(t.value for t in GpuTier)
        raise DeviceError(f"--gpu-tier: unknown tier '{value}' (choose from {choices})") from None
