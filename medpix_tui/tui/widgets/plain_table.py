"""A DataTable that shows its text as written.

Textual's DataTable parses every ``str`` label and cell as Rich markup: a SQL alias such as
``"[/b]"`` raises a MarkupError, and a report's ``[see comments]`` vanishes as an unknown
style. Data, SQL names and report rows are text, never markup.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def _plain(value: Any) -> Any:
    return Text(value) if isinstance(value, str) else value


class PlainTable(DataTable[Any]):
    """:class:`~textual.widgets.DataTable` whose ``str`` labels and cells are plain text."""

    def add_column(self, label: Any, *args: Any, **kwargs: Any) -> Any:
        return super().add_column(_plain(label), *args, **kwargs)

    def add_row(self, *cells: Any, **kwargs: Any) -> Any:
        return super().add_row(*(_plain(c) for c in cells), **kwargs)
