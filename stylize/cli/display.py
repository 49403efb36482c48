"""What the command line shows while it works: progress bars, tables, notes."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

stdout = Console()
stderr = Console(stderr=True)
# Tables piped to a file or another program are not cut to 80 columns.
PIPED_WIDTH = 160


def print_table(table: Table, console: Console = stdout) -> None:
    (console if console.is_terminal else Console(width=PIPED_WIDTH, stderr=console.stderr)).print(table)


def notice(note: str) -> None:
    typer.echo(f"note: {note}", err=True)


class ProgressBars:
    """Bars on stderr that appear with their first update, so that an error
    before any work (a bad file, a bad setting) stays one line."""

    def __init__(self, transient: bool = False):
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=stderr,
            transient=transient,
        )

    def add(self, description: str, total: int | None = None, status: str = "") -> Any:
        return self._progress.add_task(description, total=total, status=status)

    def update(self, task: Any, **fields: Any) -> None:
        self._progress.start()  # does nothing once started
        self._progress.update(task, **fields)

    def stop(self) -> None:
        """Take the bars off the screen's live area, so that what is printed next follows them."""
        if self._progress.live.is_started:
            self._progress.stop()

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
