"""Checkpoints are data, not code.

Every checkpoint kitaeru writes holds plain tensors, numbers and strings, so it loads with
``torch.load(weights_only=True)``. A checkpoint someone hands you may instead carry pickled
objects, and unpickling runs whatever code they name. :func:`load_checkpoint` therefore loads
with ``weights_only=True`` and refuses, in one line that names ``--trust-checkpoint``, a file that
needs arbitrary unpickling; only with ``trust=True`` (the user's ``--trust-checkpoint``) is it
loaded fully. Lightning resume (``fit(ckpt_path=...)``) goes through :func:`check_checkpoint`
first and then passes ``weights_only=not trust`` on.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError

TRUST_FLAG = "--trust-checkpoint"


def load_checkpoint(path: str | os.PathLike, *, trust: bool = False, map_location: Any = "cpu",
                    what: str = "checkpoint", trust_flag: str | None = TRUST_FLAG) -> Any:
    """``torch.load(path, weights_only=not trust)`` with one-line errors naming the file.

    Missing or unreadable files raise :class:`DataError`; a file that needs unpickling of arbitrary
    objects raises :class:`ConfigError` naming ``trust_flag`` (never a library message that suggests
    ``weights_only=False``); ``trust_flag=None`` for commands that only ever load data.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and "UNSUPPORTED GLOBAL" in str(exc).upper():
            advice = (f"load it only if you trust its source, with {trust_flag}" if trust_flag
                      else "this command loads only checkpoints that are plain data (tensors, numbers, strings)")
            raise ConfigError(f"{path}: {what} holds pickled objects that could run code when loaded; {advice}") from None
        raise DataError(f"{path}: not a PyTorch {what} ({_unpickler_reason(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a PyTorch {what} ({type(exc).__name__}: {_first_line(exc)})") from None


def check_checkpoint(path: str | os.PathLike, *, trust: bool = False, what: str = "checkpoint",
                     trust_flag: str | None = TRUST_FLAG) -> None:
    """Refuse ``path`` (one line) unless it loads as data, or the user trusts it; used before a
    library (Lightning ``fit(ckpt_path=...)``, Ultralytics) loads the file itself."""
    if trust:
        if not Path(path).is_file():
            raise DataError(f"{path}: {what} not found")
        return
    load_checkpoint(path, trust=False, what=what, trust_flag=trust_flag)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    # torch's own advice is to turn the safety off; ours is the flag above
    return first.replace("weights_only=False", "weights_only=True refused")[:200]


def _unpickler_reason(exc: BaseException) -> str:
    """The unpickler's own reason ("Unsupported operand 110"), not torch's advice around it."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[-1].strip()
            return (rest or (lines[i + 1] if i + 1 < len(lines) else "unreadable"))[:200]
    return _first_line(exc)
