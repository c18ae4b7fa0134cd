"""The results table: one row per image, filled a page at a time.

DataTable measures every cell of every row it is given, about half a millisecond a row;
filling all 2050 images would stall the screen for a second after each keystroke. Rows
are added in pages instead, the next page as the cursor or the scrollbar nears the end.
The diagnosis column takes whatever width the others leave.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.segment import Segment
from textual import events
from textual.widgets import DataTable

#: (label, width); width None is the diagnosis column, which gets the rest.
COLUMNS: tuple[tuple[str, int | None], ...] = (
    ("Image", 19), ("Case", 7), ("Diagnosis / title", None), ("Mod", 3), ("Plane", 9), ("Location", 16),
)
#: The document fields a row shows (the title comes from the case).
ROW_FIELDS = ("image", "U_id", "Type", "Description.Plane", "Location")
MIN_DIAGNOSIS = 24
#: Rows added at a time beyond what the table shows: few, as each costs time on every keystroke.
PAGE = 20
#: Load the next page when the cursor or the view is this many rows from the end.
MARGIN = 10


class Cell:
    """One line of plain text, cut with an ellipsis to the column's width.

    DataTable renders every visible cell again after each change; a ``rich.text.Text``
    goes through wrapping and justification to produce the same single segment, at about
    twice the cost, and the table's cells are most of a keystroke's drawing time.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        width = options.max_width
        text = self.text
        if cell_len(text) > width:
            text = set_cell_size(text, width - 1) + "…" if width > 1 else set_cell_size(text, width)
        yield Segment(text)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = cell_len(self.text)
        return Measurement(width, width)

    def __str__(self) -> str:
        return self.text


class ResultsTable(DataTable[Cell]):
    """Images of the current result, in result order."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._docs: list[dict[str, Any]] = []
        self._titles: dict[str, str] = {}
        self._shown = 0
        self._diagnosis_width = 0

    def _set_columns(self) -> None:
        """(Re)create the columns for the current width; the rows shown so far come back."""
        fixed = sum(w or 0 for _, w in COLUMNS) + 2 * self.cell_padding * len(COLUMNS) + 2  # + scrollbar
        width = max(MIN_DIAGNOSIS, self.size.width - fixed)
        if width == self._diagnosis_width:
            return
        self._diagnosis_width = width
        cursor = self.cursor_row
        shown = self._shown
        self.clear(columns=True)
        for label, column_width in COLUMNS:
            self.add_column(label, width=column_width or width)
        self._shown = 0
        self._more(shown)
        if self.row_count:
            self.move_cursor(row=min(cursor, self.row_count - 1), animate=False)

    def on_resize(self, event: events.Resize) -> None:
        self._set_columns()

    def show(self, images: list[dict[str, Any]], titles: dict[str, str], *, keep_cursor: bool = False) -> None:
        """Replace the rows with these images, from the top (or where the cursor was)."""
        row = self.cursor_row if keep_cursor else 0
        shown = self._shown if keep_cursor else 0
        self._docs, self._titles = images, titles
        self._shown = 0
        if not self.columns:
            self._set_columns()
        self.clear()
        self._more(max(self.size.height + MARGIN, shown))
        if row:
            self.move_cursor(row=min(row, self.row_count - 1), animate=False)

    @property
    def current_name(self) -> str | None:
        """The image under the cursor."""
        if not self.row_count or self.cursor_row >= len(self._docs):
            return None
        return self._docs[self.cursor_row]["image"]

    def _more(self, count: int = PAGE) -> None:
        """Add the next ``count`` rows (cells are built only for rows that are shown)."""
        chunk = self._docs[self._shown: self._shown + count]
        if chunk:
            self.add_rows([_cells(d, self._titles.get(d["U_id"], "")) for d in chunk])
            self._shown += len(chunk)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row >= self._shown - MARGIN:
            self._more()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value + self.scrollable_content_region.height >= self._shown - MARGIN:
            self._more()


def _cells(doc: dict[str, Any], title: str) -> tuple[Cell, ...]:
    desc = doc.get("Description") or {}
    values = (doc["image"], doc["U_id"], title, doc.get("Type"), desc.get("Plane"), doc.get("Location"))
    return tuple(Cell(" ".join(str(v or "").split())) for v in values)
