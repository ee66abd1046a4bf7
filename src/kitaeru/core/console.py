"""Terminal output: one Rich console on stderr for progress and messages, tables for summaries.

Progress and notices go to stderr so that ``--json`` output on stdout stays machine-readable.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, Sequence, TypeVar

from rich.console import Console
from rich.table import Table
from rich.text import Text

T = TypeVar("T")

def _width(stream) -> int | None:
    # Piped/CI output: Rich would assume 80 columns and fold paths; logs read better wider.
    return None if stream.isatty() or os.environ.get("COLUMNS") else 160


console = Console(stderr=True, highlight=False, width=_width(sys.stderr))
stdout = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    console.print(f"[yellow]warning:[/yellow] {message}")


def progress_disabled() -> bool:
    return bool(os.environ.get("KITAERU_NO_PROGRESS")) or not sys.stderr.isatty() and bool(os.environ.get("CI"))


def progress_lines() -> bool:
    """Whether plain progress lines are wanted (``KITAERU_PROGRESS_LINES``): a log file watched by
    the dashboard gets one line per epoch even with the bars off, since bars redraw in place."""
    return bool(os.environ.get("KITAERU_PROGRESS_LINES"))


def progress_line(message: str) -> None:
    """One line of progress on stderr when :func:`progress_lines` is on (flushed: a log tail sees it)."""
    if progress_lines():
        console.print(message, markup=False, highlight=False, soft_wrap=True)
        console.file.flush()


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A progress bar over ``iterable`` (quiet when ``KITAERU_NO_PROGRESS`` is set or in CI logs)."""
    if progress_disabled():
        if not progress_lines():
            yield from iterable
            return
        yield from _tracked_lines(iterable, description, total)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        yield from progress.track(iterable, total=total, description=description)


def _tracked_lines(iterable: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    """``description i/total`` lines, at most one a second (and the last), for a log file."""
    import time

    last = 0.0
    done = 0
    for done, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if now - last >= 1.0 or done == total:
            last = now
            progress_line(f"{description} {done}/{total if total is not None else '?'}")


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, overflow="fold")  # paths must stay whole (and copyable) in logs
    for row in rows:
        t.add_row(*[_cell(v) for v in row])
    return t


def _cell(value: object) -> Text:
    # Cells are data (descriptions, paths): a Text object is never parsed as markup.
    if isinstance(value, float):
        return Text(f"{value:.4f}")
    return Text(str(value))


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]], *, to_stdout: bool = True) -> None:
    (stdout if to_stdout else console).print(table(title, columns, rows))
