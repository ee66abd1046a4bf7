"""The one step every training mode takes before its heavy work: which folder the run lives in,
whether it continues an earlier run (``--resume latest|PATH``), the config it runs with, and the
command lines that continue or restart it.

One meaning of "an option the user gave" everywhere: the fields Pydantic records as *set* —
command-line flags, ``key=value``, ``--config``/``--cfg-name`` files, keyword arguments of the
Python API — never "differs from the default" (``--epochs 30`` given on resume is given, even when
30 is the default). On ``--resume`` the run's saved ``config.yaml`` is the base and the given
settings go on top, so a resumed run is the same run unless the user says otherwise.

Command lines are spelled from the schema (a top-level field's own flag, ``key=value`` for the
rest), so a printed resume/restart command is always one the command line accepts.

Each recipe describes its runs once in a :class:`RunLayout` and calls :func:`open_run`; the
lifecycle that follows (``running`` → ``completed``/``failed``/``interrupted`` with the resume
command) is :meth:`kitaeru.core.run.RunFolder.lifecycle`.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, Optional, Sequence, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .run_dirs import RESULT_JSON, next_run_dir, refuse_used_run_dir, run_dir_under

C = TypeVar("C", bound=BaseModel)
CONFIG_YAML = "config.yaml"


# ---- what the user gave ----------------------------------------------------------------------------


def given_settings(config: BaseModel) -> dict[str, Any]:
    """The settings the user gave, nested, as plain (JSON) values: the fields that were set,
    whatever their value — the one meaning of "given" for resume, restart and trackers."""
    return config.model_dump(mode="json", exclude_unset=True)


def given_keys(config: BaseModel) -> set[str]:
    """The top-level names of :func:`given_settings`."""
    return set(config.model_fields_set) & set(type(config).model_fields)


# ---- command lines from the schema -------------------------------------------------------------------


def _dotted(values: Mapping[str, Any], schema: type[BaseModel], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"train": {"lr": 0.1}}`` -> ``[("train.lr", 0.1)]`` for nested sections of ``schema``
    (free-form dict fields stay whole)."""
    from .config import section_schema

    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        info = schema.model_fields.get(key)
        inner = section_schema(info.annotation) if info is not None else None
        if inner is not None and isinstance(value, Mapping):
            out += _dotted(value, inner, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _flag_words(schema: type[BaseModel], key: str, value: Any) -> list[str] | None:
    """The words of ``--flag value`` for a top-level scalar field that has a flag, else None."""
    from .config import cli_meta

    info = schema.model_fields.get(key)
    if "." in key or info is None or not cli_meta(info)["flag"] or value is None or isinstance(value, dict):
        return None
    flag = "--" + key.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else f"--no-{flag[2:]}"]
    if isinstance(value, list):
        if not all(isinstance(v, (str, int, float)) for v in value):
            return None
        return [word for item in value for word in (flag, str(item))]
    return [flag, str(value)]


def command_line(recipe: str, mode: str, schema: type[BaseModel], values: Mapping[str, Any],
                 *, before: Sequence[str] = ()) -> str:
    """``kitaeru <recipe> <mode> [before...] --flag value ... key=value`` for ``values`` (nested
    settings of ``schema``), quoted for a POSIX shell."""
    words = ["kitaeru", recipe, mode, *before]
    for key, value in _dotted(values, schema):
        flag = _flag_words(schema, key, value)
        if flag is not None:
            words += flag
        else:
            words.append(f"{key}={json.dumps(value) if not isinstance(value, str) else value}")
    return shlex.join(words)


def resume_command(recipe: str, run_dir: str | os.PathLike, *, mode: str = "train") -> str:
    """The command that continues the run in ``run_dir`` (its ``config.yaml`` brings every option)."""
    return shlex.join(["kitaeru", recipe, mode, "--resume", str(run_dir)])


# ---- where runs are ----------------------------------------------------------------------------------


def has_config(folder: Path) -> bool:
    return (folder / CONFIG_YAML).is_file()


def _status(folder: Path) -> str | None:
    try:
        return json.loads((folder / RESULT_JSON).read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _stamp(folder: Path) -> float:
    """When a run last wrote its evidence (its result, else its config, else the folder)."""
    for name in (RESULT_JSON, CONFIG_YAML):
        try:
            return (folder / name).stat().st_mtime
        except OSError:
            continue
    return folder.stat().st_mtime


def weights_file_run(*suffixes: str) -> Callable[[Path], Path]:
    """A ``RunLayout.locate``: a weights file given to ``--resume`` (``RUN/weights/last.pt``, or a
    file beside the config; any of ``suffixes``, or any file) stands for the run folder holding it."""

    def locate(path: Path) -> Path:
        if path.is_file() and (not suffixes or path.suffix in suffixes):
            return path.parent.parent if path.parent.name == "weights" else path.parent
        return path

    return locate


@dataclass(frozen=True)
class RunLayout:
    """How one recipe's training runs sit on disk — declared once, next to its schema."""

    recipe: str
    what: str  # the run's kind in messages: "detect", "LoRA" ...
    is_run: Callable[[Path], bool] = has_config  # a folder holds one of these runs
    locate: Optional[Callable[[Path], Path]] = None  # a path given to --resume (a weights file ...) -> its run folder
    default_name: str = "train"  # new runs: <root>/<name>, <name>2, ... (as Ultralytics numbers them)
    unfinished_only: bool = False  # --resume latest skips completed runs
    pinned: Mapping[str, str] = field(default_factory=dict)  # field -> flag: may not change on resume
    replace_together: Sequence[frozenset[str]] = ()  # giving one of a group drops the saved others
    name_setting: str = "--name"
    # A given name numbered when taken (Ultralytics' ``name=``: exp, exp2 ...) instead of used exactly
    # (refused when it holds a run, unless ``--exist-ok``).
    numbered_names: bool = False
    # The file ``is_run`` looks for, named when a folder is refused as a run folder.
    marker: str = CONFIG_YAML
    # Several processes train one run (a ddp child Lightning/Fabric started, torchrun/SLURM ranks):
    # the others join the folder rank 0 chose, and rank 0 alone refuses a used name.
    joins_rank_zero: bool = False


def find_run(reference: str, root: str | os.PathLike, layout: RunLayout) -> Path:
    """The run folder ``--resume`` names: ``latest`` (the newest run under ``root``) or a path
    (a run folder, or what ``layout.locate`` maps to one)."""
    root = Path(root)
    if reference == "latest":
        found = [d for d in (root.iterdir() if root.is_dir() else ()) if d.is_dir() and layout.is_run(d)]
        if layout.unfinished_only:
            found = [d for d in found if _status(d) != "completed"]
        if not found:
            kind = f"unfinished {layout.what}" if layout.unfinished_only else layout.what
            raise ConfigError(f"--resume latest: no {kind} run under {root} (give the run folder with --resume PATH)")
        return max(found, key=_stamp)
    path = Path(reference).expanduser()
    if not path.exists():
        raise ConfigError(f"--resume {reference}: not found (give latest or a run folder)")
    folder = layout.locate(path) if layout.locate is not None else path
    if not folder.is_dir() or not layout.is_run(folder):
        raise ConfigError(f"--resume {reference}: {folder} is not a {layout.what} run folder (no {layout.marker})")
    return folder


def new_run_dir(root: str | os.PathLike, name: Optional[str], layout: RunLayout, *, exist_ok: bool = False) -> Path:
    """A new run's folder: ``root/name`` (refused when it holds a run, unless ``exist_ok``; numbered
    instead with ``layout.numbered_names``) or the next free ``root/<default_name>N``."""
    if not name or (layout.numbered_names and not exist_ok):
        return next_run_dir(root, name or layout.default_name, setting=layout.name_setting)
    run_dir = run_dir_under(root, name, setting=layout.name_setting)
    refuse_used_run_dir(run_dir, exist_ok=exist_ok)
    return run_dir


def saved_config(config: C, run_dir: str | os.PathLike, layout: RunLayout, *, now: Mapping[str, Any] | None = None) -> C:
    """The run's saved ``config.yaml`` with the given settings of ``config`` on top (``now`` adds
    or replaces values after that, e.g. the resolved ``resume``)."""
    from .config import canonical_keys, deep_merge, format_validation_error, read_yaml

    schema = type(config)
    file = Path(run_dir) / CONFIG_YAML
    saved = read_yaml(file)
    if not isinstance(saved, dict):
        raise ConfigError(f"{file}: expected a mapping of settings")
    saved = canonical_keys(schema, saved)  # runs written before a setting was renamed keep resuming
    given = given_settings(config)
    for group in layout.replace_together:
        if group & set(given):
            saved = {k: v for k, v in saved.items() if k not in group}
    for key, flag in layout.pinned.items():
        if key in given and key in saved and given[key] != saved[key]:
            raise ConfigError(f"{flag} cannot change when resuming (the run used {saved[key]!r})")
    try:
        return schema.model_validate(deep_merge(deep_merge(saved, given), dict(now or {})))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{file} + command line")) from None


@dataclass
class OpenedRun(Generic[C]):
    """Where a run goes and what it runs with; nothing is written yet."""

    config: C
    run_dir: Path
    resumed: bool
    layout: RunLayout

    @property
    def resume_command(self) -> str:
        return resume_command(self.layout.recipe, self.run_dir)

    def restart_command(self, *, root_field: str = "output_dir", name_field: str = "name") -> str:
        """Start this run again from nothing, in the same folder, with its saved config."""
        values = {root_field: str(self.run_dir.parent), name_field: self.run_dir.name, "exist_ok": True}
        return command_line(self.layout.recipe, "train", type(self.config), values,
                            before=["--config", str(self.run_dir / CONFIG_YAML)])


def open_run(config: C, layout: RunLayout, *, root: str | os.PathLike, name: Optional[str] = None,
             resume: Optional[str] = None, exist_ok: bool = False, now: Mapping[str, Any] | None = None) -> OpenedRun[C]:
    """Pick the run's folder and config: ``--resume`` finds the run and merges its saved config with
    what was given now; a new run gets ``root/name`` or the next free ``root/<default>N``. Cheap
    (no folder is created): call it before heavy imports so a mistake costs nothing."""
    if layout.joins_rank_zero:
        from .distributed import is_rank_zero, place, shared_run_dir

        handed = shared_run_dir()  # rank 0's folder, already checked and in use
        if handed and not resume:
            return OpenedRun(config, Path(handed), False, layout)
        resume = handed or resume
        if not (resume or name) and place().world_size > 1:  # torchrun/SLURM: none can number a folder alone
            raise ConfigError(f"several processes (torchrun/SLURM) share one run folder: give {layout.name_setting}")
        exist_ok = exist_ok or not is_rank_zero()
    if resume:
        run_dir = find_run(str(resume), root, layout)
        merged = saved_config(config, run_dir, layout, now={"resume": str(run_dir), **(now or {})})
        return OpenedRun(merged, run_dir, True, layout)
    return OpenedRun(config, new_run_dir(root, name, layout, exist_ok=exist_ok), False, layout)
