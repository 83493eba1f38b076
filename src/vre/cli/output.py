"""How the CLI shows things: Rich tables for people, ``--json`` for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

console = Console()
if not console.is_terminal:  # piped into a file or a script: do not cut columns
    console = Console(width=250)
errors = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of a table.")


def fail(message: str, code: int = 2) -> NoReturn:
    """One readable line on stderr; exit 2 for bad input, 1 for failures elsewhere."""
    errors.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    grid = Table(title=title, show_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(column.upper().replace("_", " "))
    for row in rows:
        grid.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in columns])
    console.print(grid)


def show(data: Any, as_json: bool, columns: Sequence[str] | None = None) -> None:
    if as_json:
        emit_json(data)
    elif isinstance(data, list):
        table(data, columns or (list(data[0]) if data else []))
    else:
        for key, value in data.items():
            console.print(f"[bold]{key}[/bold]: {value}", highlight=False)


@contextmanager
def transfer_bars(total: int, label: str) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """A total bar plus one bar per file; yields ``start(name, size) -> advance``."""
    with Progress(
        TextColumn("{task.description}", justify="left"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=False,
        disable=not errors.is_terminal,
    ) as progress:
        overall = progress.add_task(f"[bold]{label}", total=total)
        current: list[TaskID] = []

        def start(name: str, size: int) -> Callable[[int], None]:
            if current:
                progress.remove_task(current.pop())
            task = progress.add_task(name, total=size)
            current.append(task)

            def advance(n: int) -> None:
                progress.advance(task, n)
                progress.advance(overall, n)

            return advance

        yield start
