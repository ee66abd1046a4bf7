"""Checkpoints are data, not code.

Every checkpoint kitaeru writes holds plain tensors, numbers and strings, so it loads with
``torch.load(weights_only=True)``. A checkpoint someone hands you may instead carry pickled
objects, and unpickling runs whatever code they name. :func:`load_checkpoint` therefore loads
with ``weights_only=True`` and refuses, in one line that names ``--trust-checkpoint``, a file that
needs arbitrary unpickling; only with ``trust=True`` (the user's ``--trust-checkpoint``) is it
loaded fully. Lightning resume (``fit(ckpt_path=...)``) goes through :func:`check_checkpoint`
first and then passes ``weights_only=not trust`` on. Checkpoints that pickle whole modules
(Ultralytics ``.pt``) go through :func:`load_model_checkpoint` / :func:`check_model_checkpoint`,
which let only the named ``nn.Module`` classes into torch's weights-only unpickler, and only as
data (built, never called: see :mod:`.pickle_scan`).
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
        raise DataError(f"{path}: cannot read {what}: not a PyTorch {what} ({_unpickler_reason(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - zip, struct, pickle errors of many kinds: name the file
        raise DataError(f"{path}: cannot read {what}: not a PyTorch {what} ({type(exc).__name__}: {_first_line(exc)})") from None


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


def load_model_checkpoint(path: str | os.PathLike, *, trust: bool = False, allow_modules: tuple[str, ...] = (),
                          allow_names: tuple[str, ...] = (), map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """Load a checkpoint that pickles whole ``nn.Module`` objects (an Ultralytics ``.pt``) without
    running arbitrary code: every global it names must be a ``torch.nn.Module`` subclass from a module
    under ``allow_modules`` (``("ultralytics.nn.tasks.", "ultralytics.nn.modules.")``) or
    ``torch.nn.modules.``, or a plain data class named exactly in ``allow_names`` (such as
    ``ultralytics.utils.IterableSimpleNamespace``). A module class must be *built* the way ``torch.save``
    writes it (``__new__`` + ``__setstate__``, neither defined outside PyTorch), never *called*: a pickle
    that calls one, or passes one to any call, is refused (:mod:`.pickle_scan`), because torch's
    weights-only unpickler would run its constructor with the file's arguments. Everything else is
    refused in one line naming ``--trust-checkpoint``; with ``trust`` the file is loaded fully.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    if trust:
        return load_checkpoint(path, trust=True, map_location=map_location, what=what)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # noqa: BLE001 - not a zip checkpoint, truncated, ...
        raise DataError(f"{path}: cannot read {what}: not a PyTorch {what} ({type(exc).__name__}: {_first_line(exc)})") from None
    prefixes = ("torch.nn.modules.", *allow_modules)
    classes, modules, refused = [], set(), []
    for name in names:
        cls = _module_class(name) if name.startswith(prefixes) else _named_class(name) if name in allow_names else None
        if cls is not None and name.startswith(prefixes):
            modules.add(name)
            if _runs_code_when_built(cls):
                cls = None
        (classes if cls is not None else refused).append(cls if cls is not None else name)
    if refused:
        shown = ", ".join(sorted(refused)[:3]) + (" ..." if len(refused) > 3 else "")
        raise ConfigError(f"{path}: {what} names code outside the model classes ({shown}), which could run when "
                          f"loaded; load it only if you trust its source, with {TRUST_FLAG}")
    _refuse_module_calls(path, modules, what)
    with torch.serialization.safe_globals(classes):
        return load_checkpoint(path, trust=False, map_location=map_location, what=what)


def check_model_checkpoint(path: str | os.PathLike, *, trust: bool = False, allow_modules: tuple[str, ...] = (),
                           allow_names: tuple[str, ...] = (), what: str = "checkpoint") -> None:
    """:func:`load_model_checkpoint` as a check, before a library (Ultralytics) loads the file itself."""
    if trust:
        if not Path(path).is_file():
            raise DataError(f"{path}: {what} not found")
        return
    load_model_checkpoint(path, trust=False, allow_modules=allow_modules, allow_names=allow_names, what=what)


def _refuse_module_calls(path: Path, modules: set[str], what: str) -> None:
    """Refuse a file whose pickle calls an allowed module class (its constructor would run with the
    file's arguments: ``AutoBackend("stage2.pt")`` loads another file fully) instead of building it the
    way ``torch.save`` does (``cls.__new__`` + ``__setstate__``)."""
    from .pickle_scan import checkpoint_pickle, find_class_calls

    if not modules:
        return
    try:
        calls = find_class_calls(checkpoint_pickle(path), modules)
    except Exception as exc:  # noqa: BLE001 - a pickle the scanner cannot follow is not loaded
        raise DataError(f"{path}: cannot read {what}: not a PyTorch {what} ({type(exc).__name__}: {_first_line(exc)})") from None
    if calls:
        shown = "; ".join(sorted(set(calls))[:2]) + (" ..." if len(set(calls)) > 2 else "")
        raise ConfigError(f"{path}: {what} calls model classes when loaded ({shown}), which could run code; "
                          f"load it only if you trust its source, with {TRUST_FLAG}")


def _runs_code_when_built(cls) -> bool:
    """True when building ``cls`` from a pickle would run its own code: a ``__new__`` or
    ``__setstate__`` defined outside PyTorch (torch's own only set defaults)."""
    for hook in ("__new__", "__setstate__"):
        owner = next((k for k in cls.__mro__ if hook in vars(k)), object)
        if owner is not object and not owner.__module__.startswith("torch."):
            return True
    return False


def _module_class(dotted: str):
    """The ``nn.Module`` subclass ``dotted`` names, or None (a function, a missing name, anything else)."""
    import importlib

    import torch

    module_name, _, attr = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, torch.nn.Module) else None


def _named_class(dotted: str):
    """The class ``dotted`` names (a caller-listed data holder), or None if it is not a class."""
    import importlib

    module_name, _, attr = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError):
        return None
    return obj if isinstance(obj, type) else None
