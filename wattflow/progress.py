"""A progress bar for anything that takes more than a few seconds; silent when not on a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def progress(description: str, total: float | None) -> Iterator["Advance"]:
    if not sys.stderr.isatty():
        yield Advance(None, None)
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=True,
    ) as bar:
        yield Advance(bar, bar.add_task(description, total=total))


class Advance:
    def __init__(self, bar: Progress | None, task: int | None) -> None:
        self._bar, self._task = bar, task

    def __call__(self, steps: float = 1, description: str | None = None) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=steps, description=description)
