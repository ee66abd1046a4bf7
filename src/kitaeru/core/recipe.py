"""The face every job shows: a :class:`Recipe` with one :class:`Mode` per command.

A recipe package (``kitaeru/recipes/<job>/__init__.py``) declares ``RECIPE = Recipe(...)``: its
name, one line of help, and its modes. A mode names its config schema (a Pydantic model whose
fields carry help, types, allowed values and aliases) and its entry function, which takes the
resolved config and returns a JSON-able result. The command line is generated from this (see
``kitaeru.cli.generate``), so a field is declared once, in the schema.

This module is light on purpose: the CLI reads every recipe's declaration before anything heavy
(torch, Lightning, Ultralytics, diffusers) is imported. Entry functions import their heavy parts
inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from pydantic import BaseModel

# An entry function: resolved config -> JSON-able result (printed by ``--json``) or None.
Entry = Callable[[Any], Optional[Any]]
# Prints the human summary of a result (tables, paths) when ``--json`` is not given.
Summary = Callable[[Any], None]
# Checks done before any heavy import: paths exist, combinations make sense (raise KitaeruError).
Check = Callable[[Any], None]


@dataclass(frozen=True)
class Mode:
    """One command of a recipe, e.g. ``kitaeru detect train``."""

    name: str
    schema: type[BaseModel]
    run: Entry
    help: str
    examples: Sequence[str]
    summary: Optional[Summary] = None
    check: Optional[Check] = None
    # Other spellings of the command (the guides' names): ``export-onnx`` for ``export``.
    aliases: Sequence[str] = ()
    # Whether the command takes --cfg-name/--config presets and prints --print-config.
    presets: bool = False
    # A dict field that receives ``key=value`` pairs that are not fields of the schema
    # (Ultralytics' own training arguments, say). None: such keys are errors.
    passthrough_field: Optional[str] = None
    # A list field that receives bare arguments (no ``=``): ``classify a.jpg b.jpg`` -> images.
    positional_field: Optional[str] = None
    # Switches that stand for a preset: ``{"fast": "fast"}`` makes ``--fast`` = ``--cfg-name fast``.
    preset_switches: Mapping[str, str] = field(default_factory=dict)
    # Flags that set a field to a fixed value: ``{"validate-only": ("mode", "val")}``.
    constant_flags: Mapping[str, tuple[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A job: its name on the command line, its one-line help and its modes in story order."""

    name: str
    help: str
    modes: Sequence[Mode]
    # Where its YAML presets live: ``kitaeru/configs/<presets_dir>/`` (default: the name).
    presets_dir: Optional[str] = None

    @property
    def config_dir(self) -> str:
        return self.presets_dir or self.name

    def mode(self, name: str) -> Mode:
        for mode in self.modes:
            if mode.name == name or name in mode.aliases:
                return mode
        raise KeyError(name)


def configure_mode(recipe: Recipe, mode: Mode, overrides: Mapping[str, Any], *, cfg_name: str | None = None,
                   config_file: str | None = None) -> Any:
    """The resolved config of one call, whatever the front end: defaults < preset (``cfg_name`` or
    ``config_file``) < ``overrides`` (dotted field paths). Errors list every problem in one line."""
    from .config import load_config

    return load_config(mode.schema, recipe.config_dir, cfg_name=cfg_name, config_file=config_file, overrides=overrides)


def execute_mode(mode: Mode, config: Any) -> Any:
    """The mode's cheap checks (before any heavy import), then its entry function: the one way every
    front end (command line, Python API, dashboard, SageMaker) runs a command."""
    device = getattr(config, "device", None)
    if isinstance(device, str):  # a mode that loads models
        from .device import check_device_available
        from .hub import offline_when_hub_unreachable

        check_device_available(device)  # a GPU that is not there: refused before anything loads
        offline_when_hub_unreachable()  # no minute of hub retries before a model name fails or loads
    if mode.check is not None:
        mode.check(config)
    return mode.run(config)
