"""Command lines generated from the config schemas: a field is declared once, in its recipe's schema.

Why click built from the Pydantic fields (and not pydantic-settings' CLI or Typer signatures):
Typer needs a Python signature per command, which is the hand-written duplication this replaces;
pydantic-settings' CLI parses argv itself and cannot sit under kitaeru's lazy root group, its
``--help`` or its one-line errors. Walking ``model_fields`` and emitting ``click.Option`` objects is
a few dozen lines and keeps every behaviour of click (types, choices, ``--x/--no-x``, help).

Every generated command takes, besides the flags of its schema:

* ``key=value`` overrides of any field, dotted for nested ones (``train.lr0=0.01``), aliases
  accepted (``batch=8``), unknown keys answered with "did you mean"; ``--set key=value`` is the
  same thing spelled as an option;
* ``--cfg-name NAME`` / ``--config FILE`` presets and ``--print-config`` (modes that use presets);
* ``--json``: the result as JSON on stdout (human summaries and progress go elsewhere).
"""

from __future__ import annotations

import difflib
import json
import typing
from typing import Any, Literal

import click

from kitaeru.core.config import (
    cli_meta,
    field_help,
    field_paths,
    list_presets,
    parse_assignments,
    preset_summary,
    resolve_key,
    section_schema,
)
from kitaeru.core.recipe import Mode, Recipe, configure_mode, execute_mode

def refuse_unknown_command(group: click.Group, ctx: click.Context, args: list[str]) -> None:
    """An unknown sub-command is a one-line error with the closest known names."""
    name = args[0] if args else ""
    if args and not name.startswith("-") and group.get_command(ctx, name) is None:
        known = group.list_commands(ctx)
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else f" (commands: {', '.join(known)})"
        raise click.UsageError(f"no command '{name}'{hint}", ctx)


class SuggestingGroup(click.Group):
    """A click group that answers an unknown sub-command with the closest known ones."""

    def resolve_command(self, ctx: click.Context, args: list[str]):
        refuse_unknown_command(self, ctx, args)
        return super().resolve_command(ctx, args)


class AliasedGroup(SuggestingGroup):
    """A recipe's group: modes by name, plus the guides' other spellings as hidden aliases."""

    def __init__(self, *args: Any, aliases: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.aliases = aliases or {}

    def get_command(self, ctx: click.Context, cmd_name: str):
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without Optional, whether it is a list)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # a shared bounded type (core.config.RunName ...): its plain type
        return _base_type(typing.get_args(annotation)[0])
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _base_type(args[0])
        return str, False
    if origin in (list, tuple, set, typing.List):
        inner = typing.get_args(annotation)
        return (inner[0] if inner else str), True
    return annotation, False


def _click_type(base: Any) -> click.ParamType | None:
    if typing.get_origin(base) is Literal:
        return click.Choice([str(v) for v in typing.get_args(base)])
    if base is bool:
        return click.BOOL
    if base is int:
        return click.INT
    if base is float:
        return click.FLOAT
    if base is str or getattr(base, "__name__", "") in ("Path", "PosixPath"):
        return click.STRING
    try:
        import enum

        if isinstance(base, type) and issubclass(base, enum.Enum):
            return click.Choice([str(m.value) for m in base])
    except TypeError:
        pass
    return None  # dicts, models, unions of several types: key=value only


def _dash(name: str) -> str:
    return "--" + name.replace("_", "-")


def schema_options(schema: type, skip: set[str] = frozenset()) -> tuple[list[click.Option], dict[str, str]]:
    """Click options for a schema's flag-worthy fields, and ``param name -> dotted key``."""
    options: list[click.Option] = []
    targets: dict[str, str] = {}
    taken: set[str] = set()
    for path, info in field_paths(schema).items():
        meta = cli_meta(info)
        top = "." not in path
        if not meta["flag"] or (not top and not meta["promote"]) or section_schema(info.annotation) is not None:
            continue
        leaf = path.rsplit(".", 1)[-1]
        if leaf in skip:
            continue
        base, multiple = _base_type(info.annotation)
        ctype = _click_type(base)
        if ctype is None:
            continue
        param = f"opt_{path.replace('.', '__')}"
        names = [_dash(leaf)] + [_dash(a) for a in meta["aliases"]]
        names = [n for n in names if n not in taken]
        if meta["short"] and meta["short"] not in taken:
            names.append(meta["short"])
        taken.update(names)
        help_text = field_help_for(info)
        if base is bool and not multiple:
            # --x/--no-x for the name and each alias; default None so presets and YAML still count.
            decls = [f"{n}/--no-{n[2:]}" for n in names if n.startswith("--")]
            options.append(click.Option([*decls, param], default=None, help=help_text))
        else:
            kwargs: dict[str, Any] = {"type": ctype, "default": None, "help": help_text, "multiple": multiple}
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
            if meta["flag_value"] is not None:
                kwargs.update(is_flag=False, flag_value=meta["flag_value"])
            options.append(click.Option([*names, param], **kwargs))
        targets[param] = path
    return options, targets


def command_flags(schema: type) -> list[str]:
    """Every long ``--flag`` (without dashes) the generated command takes for ``schema`` — what a
    launcher that writes command lines (SageMaker's entry point) may pass; read off the options
    themselves, so it cannot drift from them."""
    options, _ = schema_options(schema)
    flags: list[str] = []
    for option in options:
        for name in [*option.opts, *option.secondary_opts]:
            if name.startswith("--"):
                flags.append(name[2:])
    return flags


def field_help_for(info) -> str:
    class _One:  # field_help reads from a schema; give it a one-field view
        model_fields = {"x": info}

    return field_help(_One, "x")  # type: ignore[arg-type]


def mode_command(recipe: Recipe, mode: Mode) -> click.Command:
    """The click command of one mode, with its options generated from ``mode.schema``."""
    options, targets = schema_options(mode.schema)
    params: list[click.Parameter] = list(options)
    for switch, preset in mode.preset_switches.items():
        params.append(click.Option([_dash(switch), f"switch_{switch.replace('-', '_')}"], is_flag=True, default=False,
                                   help=f"The '{preset}' preset (= --cfg-name {preset})."))
    for flag, (key, value) in mode.constant_flags.items():
        params.append(click.Option([_dash(flag), f"const_{flag.replace('-', '_')}"], is_flag=True, default=False,
                                   help=f"Same as {key}={value}."))
    if mode.presets:
        params += [
            click.Option(["--cfg-name", "--cfg_name", "cfg_name"], default=None, metavar="NAME",
                         help=f"A shipped preset (see 'kitaeru {recipe.name} presets')."),
            click.Option(["--config", "config_file"], default=None, metavar="FILE",
                         help="A YAML config file (same keys as the presets)."),
            click.Option(["--print-config", "print_config"], is_flag=True, default=False,
                         help="Print the resolved config as YAML and exit."),
        ]
    params += [
        click.Option(["--set", "sets"], multiple=True, metavar="KEY=VALUE",
                     help="Override any setting (repeatable); the same as a bare KEY=VALUE argument."),
        click.Option(["--json", "as_json"], is_flag=True, default=False, help="Print the result as JSON on stdout."),
        click.Argument(["overrides"], nargs=-1, required=False),
    ]

    single = len(recipe.modes) == 1 and mode.name == recipe.name

    def callback(**kwargs: Any) -> None:
        if single and mode.presets and tuple(kwargs.get("overrides") or ()) == ("presets",):
            # ``kitaeru embed presets``: a one-command job lists its presets like the others do.
            presets_command(recipe).callback(as_json=bool(kwargs.get("as_json")))
            return
        run_mode(recipe, mode, targets, kwargs)

    examples = "\n".join(f"  {e}" for e in mode.examples)
    epilog = f"\b\nExamples:\n{examples}\n\n\b\nAny setting also as KEY=VALUE (dotted for sections): see --print-config for the keys." \
        if mode.presets else f"\b\nExamples:\n{examples}"
    return click.Command(mode.name, params=params, callback=callback, help=mode.help, epilog=epilog,
                         short_help=mode.help.splitlines()[0], context_settings={"help_option_names": ["-h", "--help"]})


def run_mode(recipe: Recipe, mode: Mode, targets: dict[str, str], kwargs: dict[str, Any]) -> Any:
    """Resolve the config (defaults < preset < flags < key=value), check it, run the entry, print."""
    from kitaeru.core.errors import ConfigError

    overrides: dict[str, Any] = {}
    for param, path in targets.items():
        value = kwargs.get(param)
        if value is None or (isinstance(value, tuple) and not value):
            continue
        overrides[path] = list(value) if isinstance(value, tuple) else value
    for flag, (key, value) in mode.constant_flags.items():
        if kwargs.get(f"const_{flag.replace('-', '_')}"):
            overrides[key] = value
    bare = list(kwargs.get("overrides") or ())
    if mode.positional_field is not None:
        positional = [a for a in bare if "=" not in a]
        bare = [a for a in bare if "=" in a]
        if positional:
            overrides[mode.positional_field] = list(overrides.get(mode.positional_field) or []) + positional
    stray = [a for a in bare if "=" not in a]
    json_fields = [f for f in field_paths(mode.schema) if f.startswith("json_")]
    if stray and kwargs.get("as_json") and json_fields:
        # ``map --json coords.json`` from before --json meant "result on stdout" everywhere.
        flag = "--" + json_fields[0].replace("_", "-")
        raise ConfigError(f"unexpected argument '{stray[0]}': --json takes no value (it prints the result); "
                          f"to write a file use {flag} {stray[0]}")
    assignments = parse_assignments(list(kwargs.get("sets") or ()) + bare)
    for key, value in assignments.items():
        overrides[resolve_key(mode.schema, key, passthrough=mode.passthrough_field)] = value
    cfg_name = kwargs.get("cfg_name")
    for switch, preset in mode.preset_switches.items():
        if kwargs.get(f"switch_{switch.replace('-', '_')}"):
            if cfg_name and cfg_name != preset:
                raise ConfigError(f"give either --{switch} or --cfg-name, not both (--{switch} is the '{preset}' preset)")
            cfg_name = preset
    config = configure_mode(recipe, mode, overrides, cfg_name=cfg_name, config_file=kwargs.get("config_file"))
    if kwargs.get("print_config"):
        from kitaeru.core.config import config_to_yaml

        click.echo(config_to_yaml(config), nl=False)
        return None
    result = execute_mode(mode, config)
    from kitaeru.core.distributed import is_rank_zero

    if not is_rank_zero():  # the other processes of a ddp job share the terminal: rank 0 prints the result
        return result
    if kwargs.get("as_json"):
        click.echo(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    elif mode.summary is not None and result is not None:
        mode.summary(result)
    return result


def presets_command(recipe: Recipe) -> click.Command:
    def callback(as_json: bool) -> None:
        names = list_presets(recipe.config_dir)
        rows = [(name, preset_summary(recipe.config_dir, name)) for name in names]
        if as_json:
            click.echo(json.dumps(dict(rows), ensure_ascii=False, indent=2))
            return
        if not rows:  # a table with no rows says nothing; this says what to do instead
            click.echo(f"{recipe.name}: no presets are shipped; every setting is an option "
                       f"(kitaeru {recipe.name} --help) or a --config FILE of your own")
            return
        from kitaeru.core.console import print_table

        print_table(f"{recipe.name} presets (use with --cfg-name NAME)", ["name", "command"], rows)

    return click.Command(
        "presets", callback=callback, help=f"List the presets shipped for '{recipe.name}' with the command that uses each.",
        params=[click.Option(["--json", "as_json"], is_flag=True, default=False, help="Print {name: first comment line} as JSON.")],
        epilog=f"\b\nExamples:\n  kitaeru {recipe.name} presets",
    )


def recipe_group(recipe: Recipe) -> click.Command:
    """The click group ``kitaeru <recipe>`` with one command per mode (and ``presets``).

    A job with a single mode of its own name (``embed``, ``map``, ``serve``) is that command itself:
    ``kitaeru embed --image-dir ...``, not ``kitaeru embed embed``.
    """
    if len(recipe.modes) == 1 and recipe.modes[0].name == recipe.name:
        return mode_command(recipe, recipe.modes[0])
    aliases = {alias: mode.name for mode in recipe.modes for alias in mode.aliases}
    group = AliasedGroup(recipe.name, help=recipe.help, no_args_is_help=True, aliases=aliases,
                         context_settings={"help_option_names": ["-h", "--help"]},
                         epilog="\b\nExamples:\n" + "\n".join(f"  {m.examples[0]}" for m in recipe.modes if m.examples))
    for mode in recipe.modes:
        group.add_command(mode_command(recipe, mode))
    if any(mode.presets for mode in recipe.modes):
        group.add_command(presets_command(recipe))
    return group
