"""``kitaeru sample ...``: write built-in sample datasets to a folder, for demos and tests."""

from __future__ import annotations

import typer

app = typer.Typer(help="Write built-in sample datasets to a folder.", no_args_is_help=True)


@app.callback()
def sample() -> None:
    """Write built-in sample datasets (driving scenes, document templates) to a folder."""
