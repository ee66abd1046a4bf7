"""The ``kitaeru`` command: a Typer root whose sub-commands are imported only when used.

``kitaeru --help`` lists every recipe from the table below without importing any of them, so it
answers instantly; ``kitaeru <name> ...`` imports just ``kitaeru.cli.<module>``. User mistakes
(:class:`~kitaeru.core.errors.KitaeruError`) print one line and exit 2; ``--debug`` anywhere on the
command line shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

import click
import typer
from typer.core import TyperGroup

from kitaeru import __version__
from kitaeru.recipes.catalog import JOBS, job_module

# name -> (module exposing ``RECIPE`` or ``app``, one-line help shown by ``kitaeru --help``): the jobs
# from their one catalog (each RECIPE takes its help line from there too), and two utility commands.
COMMANDS: dict[str, tuple[str, str]] = {
    **{name: (job_module(name), help_line) for name, help_line in JOBS.items()},
    "checks": ("kitaeru.cli.checks", "Print device, GPU tier, installed extras, offline weights and library versions."),
    "sample": ("kitaeru.cli.sample", "Write built-in sample datasets (driving scenes, documents, shapes to detect, floor plans) and a tiny SD pipeline to a folder."),
}


class LazyGroup(TyperGroup):
    """A click group that imports a sub-command's module only when that sub-command runs.

    A module either declares ``RECIPE`` (a :class:`~kitaeru.core.recipe.Recipe`, whose commands are
    generated from its config schemas) or is a small Typer ``app`` (utility commands).
    """

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return super().get_command(ctx, name)
        module_name, short_help = COMMANDS[name]
        if self._listing:  # help listing: a placeholder carrying the one-line help is enough
            return click.Command(name, help=short_help, short_help=short_help)
        module = importlib.import_module(module_name)
        from kitaeru.core.recipe import Recipe

        if isinstance(getattr(module, "RECIPE", None), Recipe):
            from kitaeru.cli.generate import recipe_group

            command = recipe_group(module.RECIPE)
        else:
            command = typer.main.get_command(module.app)
        command.name = name
        return command

    def resolve_command(self, ctx: click.Context, args: list[str]):
        from kitaeru.cli.generate import refuse_unknown_command

        refuse_unknown_command(self, ctx, args)
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        LazyGroup._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            LazyGroup._listing = False


app = typer.Typer(
    cls=LazyGroup,
    name="kitaeru",
    help="kitaeru (鍛える): train, fine-tune, embed, index, search and export vision and multimodal models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kitaeru {__version__}")
        raise typer.Exit()


@app.callback(epilog=(
    "\b\nQuick start (offline, CPU, built-in sample data):\n"
    "  kitaeru multimodal train --use-sample-data --output-dir runs/quickstart\n"
    "  kitaeru multimodal search --output-dir runs/quickstart --text \"night rain\"\n"
    "  kitaeru map --output-dir runs/quickstart --out runs/quickstart/map.png\n"
    "  kitaeru serve --output-dir runs/quickstart\n"
    "\b\nEvery command: --help, KEY=VALUE overrides, --json, --debug for tracebacks.\n"
    "What this machine can run: kitaeru checks"
))
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """kitaeru: one CLI for the training, embedding, indexing and export recipes."""


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code (used by tests and by :func:`main`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("KITAERU_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    from kitaeru.core.errors import KitaeruError

    try:
        # Not standalone: click hands usage errors to us (one-line format below) and returns the
        # exit code of ``typer.Exit``/``ctx.exit`` instead of calling sys.exit. Commands return None.
        code = app(args=args, prog_name="kitaeru", standalone_mode=False)
        if isinstance(code, int):
            return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        _print_error("interrupted")
        return 130
    except click.ClickException as exc:  # usage errors: the same one-line format as ours
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as click would show
            click.echo(exc.ctx.get_help() if exc.ctx else "")
            return 0
        if debug:
            raise
        where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) is not None else ""
        _print_error(f"{where}{exc.format_message()}")
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KitaeruError as exc:
        if debug:
            raise
        _print_error(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _print_error("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless --debug
        if debug:
            raise
        from kitaeru.core.errors import disk_error

        # a full disk, a read-only filesystem: the machine's state, not a bug
        if (mapped := disk_error(exc)) is not None:
            _print_error(str(mapped))
            return mapped.exit_code
        first = str(exc).splitlines()[0] if str(exc) else ""
        _print_error(f"unexpected {type(exc).__name__}: {first} (re-run with --debug for the traceback)")
        return 1
    return 0


def _print_error(message: str) -> None:
    from kitaeru.core.console import console

    from rich.markup import escape

    # The message is data (paths, hints like 'kitaeru[devkit]'), never markup; a newline in a
    # quoted path is shown as \\n so the error stays one line.
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    console.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def main() -> None:
    from kitaeru.core.signals import install_interrupt_handlers

    install_interrupt_handlers()  # before anything else: a parent may have left SIGINT ignored
    sys.exit(run())
