"""User-facing errors: each carries the one line a person reads and the exit status.

The CLI and the TUI catch :class:`MedpixError` and show ``str(err)``; anything else is
a bug. Exit statuses follow the issue: 2 for bad input, 1 for a failed check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class MedpixError(Exception):
    """Base class: a problem the user can fix, reported as one line."""

    exit_code: int = 1


class InputError(MedpixError):
    """Bad input from the user (a file, an argument, a query)."""

    exit_code = 2


class QueryError(InputError):
    """A query that is malformed or asks for something not allowed."""


class BundleError(MedpixError):
    """A bundle that is missing, incomplete, tampered with or unreadable."""

    exit_code = 2


class OutputExistsError(InputError):
    """An output already exists and ``--force`` was not given; ``path`` is the one that does.

    A save writes more than one path (a file and its ``<file>.manifest.json``), so a prompt
    to replace must name the path that is there, not the one the user typed.
    """

    def __init__(self, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Problem:
    """One validation problem: where it is (file, record, field) and what is wrong."""

    file: str
    record: str
    field: str
    message: str

    def __str__(self) -> str:
        where = ":".join(p for p in (self.file, self.record, self.field) if p)
        return printable(f"{where}: {self.message}")


def printable(text: str) -> str:
    """Control characters (a newline in a hostile key or id) escaped, so an error stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class ValidationError(InputError):
    """A source folder that fails validation; lists every problem at once."""

    def __init__(self, problems: list[Problem], limit: int = 20, what: str = "source") -> None:
        self.problems = problems
        shown = "; ".join(str(p) for p in problems[:limit])
        hint = " (bundle build --all-problems lists them all)" if what == "source" else ""
        more = f"; ... and {len(problems) - limit} more{hint}" if len(problems) > limit else ""
        super().__init__(f"invalid {what}: {len(problems)} problem(s): {shown}{more}")


class ServerError(InputError):
    """A MongoDB server named by ``--mongo-uri`` that cannot be reached or refuses the login."""


def brief(exc: BaseException, path: object = None, width: int = 80) -> str:
    """An exception's message for the parentheses of a one-line error: the path the error
    already names left out, cut at a word (not mid-path) to ``width``."""
    import textwrap

    text = str(exc)
    if path is not None:
        text = text.replace(f"'{path}'", "").replace(str(path), "").replace("  ", " ").strip(" :")
    return textwrap.shorten(printable(text), width, placeholder="…") or type(exc).__name__
