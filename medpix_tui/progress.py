"""A tiny progress protocol so library code reports long work without knowing the UI.

The CLI passes :func:`rich_progress`; the TUI and tests pass nothing (silent).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol


class Progress(Protocol):
    """Opens a task of ``total`` steps and returns a function that advances it."""

    def __call__(self, description: str, total: int) -> contextlib.AbstractContextManager[Callable[[int], None]]: ...


@contextlib.contextmanager
def silent(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress that shows nothing."""
    def advance(n: int = 1) -> None:
        pass
    yield advance


class Stopped(Exception):
    """Raised by a :func:`stoppable` progress's advance once its caller no longer wants the work."""


def stoppable(should_stop: Callable[[], bool]) -> Progress:
    """A silent progress whose advance raises :class:`Stopped` once ``should_stop()`` is true: a
    thread worker of a quitting app (which cannot be interrupted) ends at its next step, not minutes on."""
    @contextlib.contextmanager
    def task(description: str, total: int) -> Iterator[Callable[[int], None]]:
        def advance(n: int = 1) -> None:
            if should_stop():
                raise Stopped(description)
        yield advance

    return task


def rich_progress() -> Progress:
    """A progress that draws bars on stderr with rich (hidden when stderr is not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as RichProgress

    console = Console(stderr=True)

    @contextlib.contextmanager
    def task(description: str, total: int) -> Iterator[Callable[[int], None]]:
        with RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False, disable=not console.is_terminal,
        ) as bar:
            tid = bar.add_task(description, total=total)

            def advance(n: int = 1) -> None:
                bar.advance(tid, n)
            yield advance

    return task
