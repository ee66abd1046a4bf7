"""Where a run's folder is: named inside its output folder, numbered when taken, and never a
folder that already holds a run worth keeping. (Re-exported by :mod:`kitaeru.core.run`.)"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from .errors import ConfigError

RESULT_JSON = "training_result.json"


def timestamped_dir(root: str | os.PathLike, prefix: str) -> Path:
    """``root/<prefix>_YYYYMMDD_HHMMSS`` (a suffix is added if that name is taken)."""
    root = Path(root)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    candidate = root / f"{prefix}_{stamp}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = root / f"{prefix}_{stamp}_{n}"
    return candidate


def run_dir_under(root: str | os.PathLike, name: str, *, setting: str = "--run-name") -> Path:
    """``root/name``, refused (one line naming ``setting``) unless it stays inside ``root``: a name is
    one folder, never ``..``, an absolute path or a symlink that leads elsewhere."""
    root = Path(root)
    candidate = root / name
    if name in ("", ".", "..") or Path(name).is_absolute() or len(Path(name).parts) != 1:
        raise ConfigError(f"{setting} {name!r}: must be a single folder name inside {root}")
    inside = root.resolve()
    resolved = candidate.resolve()
    if resolved != inside and inside not in resolved.parents:
        raise ConfigError(f"{setting} {name!r}: {candidate} leads to {resolved}, outside {root}")
    return candidate


def next_run_dir(root: str | os.PathLike, name: str, *, setting: str = "--name") -> Path:
    """``root/name``, or ``name2``, ``name3`` ... when taken (as Ultralytics names its runs); the
    name must stay inside ``root`` (:func:`run_dir_under`)."""
    root = Path(root)
    run_dir_under(root, name, setting=setting)
    candidate, n = root / name, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = root / f"{name}{n}"
    return candidate


def holds_run(path: str | os.PathLike) -> bool:
    """Whether a folder already holds a run's evidence or weights worth keeping.

    A run that failed before its first epoch with no weights (a mistake in its inputs found once the
    folder was open) holds nothing: the corrected re-run may use the folder instead of being refused.
    """
    path = Path(path)
    weights = path / "weights"
    if weights.is_dir() and any(weights.iterdir()):
        return True
    result = path / RESULT_JSON
    return result.exists() and not _failed_before_training(result)


def _failed_before_training(result_file: Path) -> bool:
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # unreadable evidence is kept: someone should look at it
    return isinstance(result, dict) and result.get("status") == "failed" and not result.get("epochs_completed")


def refuse_used_run_dir(path: str | os.PathLike, *, exist_ok: bool = False, resume_flag: str = "--resume") -> None:
    """A new run never silently overwrites an earlier one's weights and evidence."""
    if not exist_ok and holds_run(path):
        raise ConfigError(
            f"{path} already holds a run (training_result.json / weights): continue it with {resume_flag}, "
            "write elsewhere with --output-dir, or overwrite it with --exist-ok"
        )
