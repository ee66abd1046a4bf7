"""The "Start a training" form, derived from the recipe's own schema (the one behind the CLI).

Each field of ``kitaeru <recipe> train`` that has a flag becomes a form field with the flag's
type, default, help and choices (see :func:`kitaeru.cli.generate.schema_options`). Only the
fields the user changed are passed on, so a chosen preset (``--cfg-name``) keeps its values.
The run's location (output folder, run name, resume target, cloud layout) is fixed by the form:
those settings, under any of their names, are refused in the free-text options.
"""

from __future__ import annotations

import importlib
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

TRAINING_RECIPES = ("detect", "multimodal", "docclass", "lora")
# Settings that decide where a run is written (or which existing run it continues). Their flags,
# aliases and key=value spellings all come from the schema.
LOCATION_FIELDS = ("output_dir", "name", "run_name", "run_prefix", "resume", "cloud", "project", "cache_dir",
                   "synthetic_cache_dir")
# The fields shown first; the others are under "all settings".
MAIN_COUNT = 8


@dataclass
class FormField:
    """One setting of the form: ``flag`` is its main command-line name."""

    path: str
    flag: str
    label: str
    kind: str  # "bool" | "choice" | "int" | "float" | "text" | "list"
    default: Any
    help: str
    choices: list[str] = field(default_factory=list)
    negative: str | None = None  # --no-x of a bool
    required: bool = False

    @property
    def default_text(self) -> str:
        if self.default is None or self.default == "" or self.kind == "list":
            return ""
        if isinstance(self.default, bool):
            return "on" if self.default else "off"
        return str(getattr(self.default, "value", self.default))


def is_location(path: str) -> bool:
    """Whether the dotted setting ``path`` decides where the run writes (a section's own ``name``,
    such as the loss's, does not)."""
    leaf = path.rsplit(".", 1)[-1]
    return leaf in LOCATION_FIELDS and ("." not in path or leaf != "name")


def train_mode(recipe: str):
    """``(Recipe, Mode)`` of ``kitaeru <recipe> train`` (ValueError for anything else)."""
    if recipe not in TRAINING_RECIPES:
        raise ValueError(f"{recipe}: not a training recipe the dashboard starts")
    module = importlib.import_module(f"kitaeru.recipes.{recipe}")
    return module.RECIPE, module.RECIPE.mode("train")


def _options(recipe: str):
    import click

    from kitaeru.cli.generate import schema_options

    _, mode = train_mode(recipe)
    options, targets = schema_options(mode.schema)
    return mode, [(o, targets[o.name]) for o in options if isinstance(o, click.Option)]


def form_fields(recipe: str) -> list[FormField]:
    """The form's fields in schema order, the run-location ones left out (the form sets those)."""
    import click

    from kitaeru.core.config import field_paths

    mode, options = _options(recipe)
    infos = field_paths(mode.schema)
    out = []
    for option, path in options:
        if is_location(path):
            continue
        info = infos[path]
        default = info.get_default(call_default_factory=True) if not info.is_required() else None
        if isinstance(option.type, click.Choice):
            kind = "choice"
        elif option.type is click.BOOL or option.is_flag and option.secondary_opts:
            kind = "bool"
        elif option.multiple:
            kind = "list"
        elif isinstance(option.type, click.types.IntParamType):
            kind = "int"
        elif isinstance(option.type, click.types.FloatParamType):
            kind = "float"
        else:
            kind = "text"
        choices = list(option.type.choices) if kind == "choice" else []
        out.append(FormField(path=path, flag=option.opts[0], label=path.rsplit(".", 1)[-1].replace("_", " "), kind=kind,
                             default=default, help=info.description or "", choices=[str(c) for c in choices],
                             negative=(option.secondary_opts or [None])[0], required=info.is_required()))
    return out


def split_main(recipe: str, fields: Sequence[FormField]) -> tuple[list[FormField], list[FormField]]:
    """``(shown first, under "all settings")``: the settings the recipe's own examples use, then
    other valued (non-switch) settings in schema order, up to :data:`MAIN_COUNT`."""
    from kitaeru.core.config import key_aliases

    _, mode = train_mode(recipe)
    words = {w.split("=", 1)[0].lstrip("-").replace("-", "_") for example in mode.examples for w in example.split()}
    named = {path for alias, path in key_aliases(mode.schema).items() if alias in words}
    used = [f for f in fields if f.path in named or f.path.rsplit(".", 1)[-1] in words or f.flag.lstrip("-").replace("-", "_") in words]
    rest = [f for f in fields if f not in used]
    main = (used + [f for f in rest if f.kind != "bool"])[:MAIN_COUNT]
    return main, [f for f in fields if f not in main]


def presets(recipe: str) -> list[str]:
    from kitaeru.core.config import list_presets

    rec, mode = train_mode(recipe)
    return list_presets(rec.config_dir) if mode.presets else []


def field_arguments(fields: Sequence[FormField], values: Mapping[str, Any]) -> list[str]:
    """The flags of the fields the user set (ValueError naming a bad value). A field left empty, or
    on "(default)", is not passed at all: the preset's value, else the schema's default, stays.

    ``values[path]``: "" or None for "not set"; bools as "on"/"off"; lists as space-separated text.
    """
    args: list[str] = []
    for f in fields:
        value = values.get(f.path)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        text = value.strip() if isinstance(value, str) else value
        if f.kind == "bool":
            wanted = text in (True, "on")
            if not wanted and not f.negative:
                continue  # a plain switch has no "off" spelling: off is its default
            args.append(f.flag if wanted else f.negative)
            continue
        if f.kind == "list":
            for item in shlex.split(str(text)):
                args += [f.flag, item]
            continue
        if f.kind in ("int", "float"):
            try:
                int(text) if f.kind == "int" else float(text)
            except ValueError:
                raise ValueError(f"{f.label}: {text!r} is not {'a whole number' if f.kind == 'int' else 'a number'}") from None
        args += [f.flag, str(text)]
    return args


def check_extra(recipe: str, extra: str) -> list[str]:
    """The free-text options split as a shell would; ValueError (one line) for a run-location option,
    an unknown option or an unreadable line."""
    import click

    from kitaeru.cli.generate import mode_command
    from kitaeru.core.config import parse_assignments, read_yaml, resolve_key
    from kitaeru.core.errors import KitaeruError

    try:
        tokens = shlex.split(extra or "")
    except ValueError as exc:
        raise ValueError(f"more options: {exc}") from None
    if not tokens:
        return []
    rec, mode = train_mode(recipe)
    command = mode_command(rec, mode)
    try:
        ctx = command.make_context(f"kitaeru {recipe} train", list(tokens))
    except click.exceptions.Exit:
        raise ValueError("more options: --help is not an option of a training started here") from None
    except click.ClickException as exc:
        raise ValueError(f"more options: {exc.format_message()}") from None
    _, options = _options(recipe)
    named = {option.name: (option, path) for option, path in options}
    for param, value in ctx.params.items():
        if param in named and is_location(named[param][1]) and value not in (None, (), False):
            raise ValueError(_location_message(named[param][0].opts[0]))
    keys = list(ctx.params.get("sets") or ()) + [a for a in ctx.params.get("overrides") or () if "=" in a]
    try:
        assignments = parse_assignments(keys)
        if ctx.params.get("config_file"):
            assignments.update(read_yaml(ctx.params["config_file"]))
        for key in assignments:
            if is_location(resolve_key(mode.schema, str(key), passthrough=mode.passthrough_field)):
                raise ValueError(_location_message(str(key)))
    except KitaeruError as exc:
        raise ValueError(f"more options: {str(exc).splitlines()[0]}") from None
    return tokens


def _location_message(name: str) -> str:
    return (f"more options: {name} sets where the run is written, which this form decides: "
            "use the 'output folder' field (inside the run folders this dashboard watches)")


def training_command(recipe: str, field_args: Sequence[str], output_dir: str, extra: str = "",
                     preset: str | None = None) -> list[str]:
    """``python -m kitaeru <recipe> train --output-dir DIR [--cfg-name P] <changed fields> <extra>``."""
    train_mode(recipe)
    tokens = check_extra(recipe, extra)
    args = [sys.executable, "-m", "kitaeru", recipe, "train", "--output-dir", output_dir]
    if preset:
        args += ["--cfg-name", preset]
    return args + list(field_args) + tokens
