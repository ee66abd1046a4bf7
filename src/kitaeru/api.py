"""The Python API: every mode of every job as a function, generated from the schema the command
line is generated from, and run the same way.

    import kitaeru
    result = kitaeru.multimodal.train(use_sample_data=True, epochs=2, output_dir="runs/q")
    kitaeru.detect.predict(model="runs/detect/train/weights/best.pt", source="images/")
    kitaeru.embed.embed(image_dir="photos", output="emb.parquet")  # a one-command job: its mode has its name
    help(kitaeru.detect.train)                              # every option with its help

A call resolves its config as the command does — defaults < preset (``cfg_name=`` or ``config=``) <
keyword arguments, where a keyword is a field, one of its aliases (the guides' spellings:
``lr0=``, ``batch=``), a dotted path written with ``__`` (``train__lr0=0.01``) or, for detect, an
Ultralytics argument — runs the same checks and entry function, writes the same run folder and
evidence, and returns exactly what ``--json`` prints (paths as strings). A mistake raises
:class:`kitaeru.KitaeruError` (``ConfigError``, ``DataError`` ...) with the message the command
prints; Ctrl-C raises ``KeyboardInterrupt`` once the run is recorded ``interrupted``.

Nothing heavy is imported until a function runs: ``import kitaeru`` stays light.
"""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any, Callable

from kitaeru.recipes.catalog import JOBS, job_module

# Keywords every mode takes besides its schema's fields (the presets of the command line).
PRESET_KEYWORDS = ("cfg_name", "config")


def call_mode(recipe, mode, kwargs: dict[str, Any]) -> Any:
    """Run ``mode`` of ``recipe`` with keyword arguments; the result as ``--json`` prints it."""
    from kitaeru.core.config import resolve_key
    from kitaeru.core.errors import ConfigError
    from kitaeru.core.recipe import configure_mode, execute_mode

    kwargs = dict(kwargs)
    cfg_name, config_file = kwargs.pop("cfg_name", None), kwargs.pop("config", None)
    overrides: dict[str, Any] = {}
    for key, value in kwargs.items():
        dashed = key.replace("_", "-")
        if dashed in mode.preset_switches:  # fast=True is the 'fast' preset, as --fast is
            if value:
                preset = mode.preset_switches[dashed]
                if cfg_name and cfg_name != preset:
                    raise ConfigError(f"give either {key}=True or cfg_name, not both ({key} is the '{preset}' preset)")
                cfg_name = preset
            continue
        if dashed in mode.constant_flags:  # validate_only=True, as --validate-only
            if value:
                field, constant = mode.constant_flags[dashed]
                overrides[field] = constant
            continue
        path = resolve_key(mode.schema, key.replace("__", "."), passthrough=mode.passthrough_field)
        overrides[path] = list(value) if isinstance(value, tuple) else _plain(value)
    config = configure_mode(recipe, mode, overrides, cfg_name=cfg_name, config_file=config_file)
    result = execute_mode(mode, config)
    return json.loads(json.dumps(result, ensure_ascii=False, default=str)) if result is not None else None


def _plain(value: Any) -> Any:
    """``pathlib.Path`` (and other path-likes) as the strings the schema reads."""
    import os

    return os.fspath(value) if isinstance(value, os.PathLike) else value


def mode_function(recipe, mode) -> Callable[..., Any]:
    """``kitaeru.<job>.<mode>``: a function with the schema's fields as keyword-only parameters."""

    def command(**kwargs: Any) -> Any:
        return call_mode(recipe, mode, kwargs)

    name = mode.name.replace("-", "_")
    command.__name__ = name
    command.__qualname__ = f"{recipe.name}.{name}" if name != recipe.name else recipe.name
    command.__module__ = f"kitaeru.{recipe.name}"
    command.__doc__ = mode_docstring(recipe, mode)
    command.__signature__ = mode_signature(mode)  # type: ignore[attr-defined]
    return command


def mode_signature(mode) -> inspect.Signature:
    params = []
    for name, info in mode.schema.model_fields.items():
        default = inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=info.annotation))
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in PRESET_KEYWORDS]
    if mode.passthrough_field or mode.preset_switches or mode.constant_flags:
        params.append(inspect.Parameter("more", inspect.Parameter.VAR_KEYWORD))
    return inspect.Signature(params)


def mode_docstring(recipe, mode) -> str:
    """The command's help, then one entry per field: name, aliases, type and help (with default)."""
    from kitaeru.core.config import cli_meta, field_help

    lines = [mode.help.strip(), "", "Keyword arguments (the options of "
             f"'kitaeru {recipe.name}{'' if mode.name == recipe.name else ' ' + mode.name}'):", ""]
    for name, info in mode.schema.model_fields.items():
        aliases = cli_meta(info)["aliases"]
        also = f" (also: {', '.join(a.replace('-', '_') for a in aliases)})" if aliases else ""
        kind = type_name(info.annotation)
        lines.append(f"    {name}{also}: {kind}")
        lines.append(f"        {field_help(mode.schema, name) or '-'}")
    if mode.presets:
        lines += ["    cfg_name: str", f"        A shipped preset (kitaeru {recipe.name} presets).",
                  "    config: str", "        A YAML config file (same keys as the presets)."]
    for switch, preset in mode.preset_switches.items():
        lines += [f"    {switch.replace('-', '_')}: bool", f"        The '{preset}' preset."]
    for flag, (key, value) in mode.constant_flags.items():
        lines += [f"    {flag.replace('-', '_')}: bool", f"        Same as {key}={value!r}."]
    if mode.passthrough_field:
        lines += ["    **more", f"        Any other keyword goes to {mode.passthrough_field} (passed through as KEY=VALUE)."]
    lines += ["", "Returns what '--json' prints. Raises kitaeru.KitaeruError (one-line message) on bad input.", "",
              "Examples (command line):", *[f"    {e}" for e in mode.examples]]
    return "\n".join(lines)


def type_name(annotation: Any) -> str:
    """``int | None``, ``'flat' | 'hnsw'``, ``list[str]``: a field's type as a user reads it."""
    import typing

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is typing.Union or str(origin) == "types.UnionType":
        return " | ".join(type_name(a) for a in args)
    if origin in (list, tuple, set, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]" if args else origin.__name__
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


class Job:
    """``kitaeru.<job>``: its modes as functions (a one-command job is callable itself)."""

    def __init__(self, name: str):
        self._name = name
        self.__doc__ = JOBS[name]

    @property
    def recipe(self):
        return importlib.import_module(job_module(self._name)).RECIPE

    def _modes(self) -> dict[str, Any]:
        return {m.name.replace("-", "_"): m for m in self.recipe.modes}

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        if attr.startswith("_"):
            raise AttributeError(attr)
        recipe = self.recipe
        for mode in recipe.modes:
            if attr in (mode.name.replace("-", "_"), *[a.replace("-", "_") for a in mode.aliases]):
                return mode_function(recipe, mode)
        raise AttributeError(f"kitaeru.{self._name} has no mode '{attr}' (modes: {', '.join(self._modes())})")

    def __call__(self, **kwargs: Any) -> Any:
        modes = self.recipe.modes
        if len(modes) != 1:
            raise TypeError(f"kitaeru.{self._name} has several modes; call one: "
                            + ", ".join(f"kitaeru.{self._name}.{m}(...)" for m in self._modes()))
        return call_mode(self.recipe, modes[0], kwargs)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._modes()))

    def __repr__(self) -> str:
        return f"<kitaeru job '{self._name}': {JOBS[self._name]}>"


# Jobs whose name is also a package of kitaeru (the vector-index library, the HTTP server, the
# dashboard): ``kitaeru.<name>`` is that package, which hands its unknown attributes to the job.
PACKAGE_JOBS = ("index", "serve", "ui")


def job(name: str) -> Any:
    """``kitaeru.<name>``: a :class:`Job`, or for :data:`PACKAGE_JOBS` the package of that name."""
    if name not in JOBS:
        raise AttributeError(f"module 'kitaeru' has no attribute '{name}'")
    if name in PACKAGE_JOBS:
        return importlib.import_module(f"kitaeru.{name}")
    return Job(name)


def job_attribute(name: str, attr: str) -> Any:
    """A mode of job ``name`` as a function (for the packages in :data:`PACKAGE_JOBS`)."""
    if attr.startswith("__"):
        raise AttributeError(attr)
    try:
        return getattr(Job(name), attr)
    except AttributeError:
        raise AttributeError(f"module 'kitaeru.{name}' has no attribute '{attr}'") from None
