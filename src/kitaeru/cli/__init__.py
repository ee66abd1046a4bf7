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

# name -> (module exposing ``app``, one-line help shown by ``kitaeru --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "multimodal": ("kitaeru.cli.multimodal", "Train/evaluate/search contrastive text-image(-time-series) scene embeddings (seed 000)."),
    "embed": ("kitaeru.cli.embed", "Embed images (or texts) with a ViT/CNN/CLIP encoder into Parquet or .npy (seed 001)."),
    "index": ("kitaeru.cli.index", "Build, extend, search and evaluate Faiss indexes over embeddings (seed 001)."),
    "serve": ("kitaeru.cli.serve", "Serve text/image search over a multimodal output or a Faiss index (FastAPI + uvicorn)."),
    "map": ("kitaeru.cli.map", "Draw a UMAP map (PNG, interactive HTML, JSON) of embeddings or a multimodal vector DB."),
    "detect": ("kitaeru.cli.detect", "Fine-tune YOLOv8 on Ultralytics: GPU-tier plans, OOM recovery, TensorBoard, LLRD, copy-paste, ONNX (seed 002)."),
    "docclass": ("kitaeru.cli.docclass", "Document classifier by metric learning: train, export-onnx, register, classify (seed 003)."),
    "sample": ("kitaeru.cli.sample", "Write built-in sample datasets (driving scenes, documents) to a folder."),
}


class LazyGroup(TyperGroup):
    """A click group that imports a sub-command's module only when that sub-command runs."""

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
        command = typer.main.get_command(module.app)
        command.name = name
        return command

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


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """kitaeru: one CLI for the training, embedding, indexing and export recipes.

    Add --debug anywhere to see full tracebacks.
    """


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` and return the exit code (used by tests and by :func:`main`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("KITAERU_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    from kitaeru.core.errors import KitaeruError

    try:
        app(args=args, prog_name="kitaeru")
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
        first = str(exc).splitlines()[0] if str(exc) else ""
        _print_error(f"unexpected {type(exc).__name__}: {first} (re-run with --debug for the traceback)")
        return 1
    return 0


def _print_error(message: str) -> None:
    from kitaeru.core.console import console

    from rich.markup import escape

    # The message is data (paths, hints like 'kitaeru[devkit]'), never markup.
    console.print(f"[bold red]error:[/bold red] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def main() -> None:
    sys.exit(run())
