"""Layer-wise learning-rate decay for Ultralytics YOLO models.

A YOLO ``DetectionModel`` is a sequence of layers ``model.0 … model.N`` (backbone, neck, and the
``Detect`` head last). Depth counts back from the head: the head is depth 0, the layer before it
depth 1, …, the stem depth N. Each parameter group Ultralytics builds (decayed weights, norm
weights, biases) is split by depth and gets ``lr = base_lr × decay ** depth``, so pretrained early
layers move little and the head adapts fastest.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

_LAYER = re.compile(r"(?:^|\.)model\.(\d+)\.")
_KIND_ORDER = {"weight": 0, "muon": 0, "bn": 1, "bias": 2}


def layer_depths(model) -> dict[str, int]:
    """Parameter name → depth from the head (0 = the last layer of ``model.model``)."""
    names = [name for name, _ in model.named_parameters()]
    indices = {}
    for name in names:
        match = _LAYER.search(name)
        indices[name] = int(match.group(1)) if match else None
    deepest = max((i for i in indices.values() if i is not None), default=0)
    # Parameters outside the layer sequence (none in stock YOLO) get the lowest rate: they are not the head.
    return {name: (deepest - i if i is not None else deepest) for name, i in indices.items()}


def apply_llrd(optimizer, model, decay: float) -> list[dict[str, Any]]:
    """Split every param group of ``optimizer`` by depth with ``lr × decay**depth``; returns a summary.

    The new groups keep every setting of the group they came from (weight decay, betas, the
    ``param_group`` tag Ultralytics' warm-up reads) and add ``depth``. Groups are ordered head
    first, so group 0 carries the base learning rate.
    """
    if not 0 < decay <= 1:
        raise ValueError(f"llrd decay must be in (0, 1], got {decay}")
    target = getattr(model, "module", model)
    depths = layer_depths(target)
    depth_of = {id(p): depths[name] for name, p in target.named_parameters()}
    deepest = max(depths.values(), default=0)
    new_groups: list[dict[str, Any]] = []
    for group in optimizer.param_groups:
        by_depth: dict[int, list] = defaultdict(list)
        for param in group["params"]:
            by_depth[depth_of.get(id(param), deepest)].append(param)
        for depth, params in by_depth.items():
            settings = {k: v for k, v in group.items() if k != "params"}
            settings["lr"] = group["lr"] * decay**depth
            settings["depth"] = depth
            new_groups.append({"params": params, **settings})
    new_groups.sort(key=lambda g: (g["depth"], _KIND_ORDER.get(str(g.get("param_group")), 3)))
    optimizer.param_groups.clear()
    for group in new_groups:
        optimizer.add_param_group(group)
    return summarize_groups(optimizer)


def summarize_groups(optimizer) -> list[dict[str, Any]]:
    """Depth, kind, learning rate and parameter count of each group (for the run's evidence)."""
    out = []
    for group in optimizer.param_groups:
        out.append({
            "depth": group.get("depth"),
            "kind": group.get("param_group"),
            "lr": float(group.get("initial_lr", group["lr"])),
            "tensors": len(group["params"]),
            "parameters": int(sum(p.numel() for p in group["params"])),
        })
    return out
