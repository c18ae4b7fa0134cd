"""The results table: one row per image, every row of the result in its height and scrollbar.

DataTable measures and keys every row it is given, about half a millisecond a row: adding all
2050 images would stall the screen for a second after each keystroke, the 61,500 of a x30
bundle for half a minute. So the table has the height of the whole result (the scrollbar's
thumb and position are those of the whole result, End goes to its last image), but a row's
key and cells are built only when it is first drawn or visited, a block of rows at a time
(as Harlequin's textual-fastdatatable reads rows from its backend only when drawn): a
keystroke costs the rows on screen, not the size of the result.
The diagnosis column takes whatever width the others leave; after a keyword search a
"Match" column shows where the words hit (the hits in bold). Any column sorts (``o``, or a
click on its header; again to reverse); the order shown is the order the case screen steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import CellKey, Row, RowDoesNotExist, RowKey

from ...query import value_at

#: key -> (label, width, document path); width None shares what the fixed columns leave.
COLUMNS: dict[str, tuple[str, int | None, str]] = {
    "image": ("Image", 19, "image"), "case": ("Case", 7, "U_id"), "title": ("Diagnosis / title", None, ""),
    "mod": ("Mod", 3, "Type"), "plane": ("Plane", 9, "Description.Plane"), "location": ("Location", 16, "Location"),
    "match": ("Match", None, ""),
    # the model's modality and location with their probabilities; sorting it puts the least
    # confident answers first (the lower of the two, :func:`model_confidence`)
    "model": ("Model", 16, "Prediction"),
}
PLAIN = ("image", "case", "title", "mod", "plane", "location")
#: From this table width (a terminal of about 140 columns with the facets), a bundle with
#: predictions also shows the model's answer.
WIDE = 110
#: After keywords the plane and location make room for where the words hit.
MATCHED = ("image", "case", "title", "mod", "match")
MIN_DIAGNOSIS = 24
#: Rows whose keys and cells are built together (one call for their snippets): a few more than
#: a screen's worth, so scrolling line by line builds a block now and then.
PAGE = 20
_BOLD = Style(bold=True)


class Cell:
    """One line of plain text, cut with an ellipsis to the column's width.

    DataTable renders every visible cell again after each change; a ``rich.text.Text``
    goes through wrapping and justification to produce the same single segment, at about
    twice the cost, and the table's cells are most of a keystroke's drawing time. Text
    between \\x01 and \\x02 (a keyword hit) is drawn bold.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        width = options.max_width
        text = self.text
        if "\x01" in text:
            yield from _marked(text, width)
            return
        if cell_len(text) > width:
            text = set_cell_size(text, width - 1) + "…" if width > 1 else set_cell_size(text, width)
        yield Segment(text)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = cell_len(self.text.replace("\x01", "").replace("\x02", ""))
        return Measurement(width, width)

    def __str__(self) -> str:
        return self.text.replace("\x01", "").replace("\x02", "")


def _marked(text: str, width: int) -> Iterator[Segment]:
    """Segments of a snippet, hits bold, cut to ``width`` with an ellipsis."""
    left = width
    bold = False
    for part in text.replace("\x02", "\x01").split("\x01"):
        if part and left > 0:
            if cell_len(part) > left:
                part = set_cell_size(part, max(0, left - 1)) + "…" if left > 1 else set_cell_size(part, left)
            left -= cell_len(part)
            yield Segment(part, _BOLD if bold else None)
        bold = not bold


class ResultsTable(DataTable[Cell]):
    """Images of the current result, in result order or sorted by a column."""

    BINDINGS = [
        Binding("o", "sort_next", "Sort", show=False, tooltip="Sort by the next column (o again moves on)"),
        Binding("O", "sort_reverse", "Reverse sort", show=False, tooltip="Reverse the sort order"),
        # as in a list, Home/End go to the first/last image (left/right still scroll sideways)
        Binding("home", "scroll_top", "First image", show=False),
        Binding("end", "scroll_bottom", "Last image", show=False),
    ]

    class Sorted(Message):
        """The order of the rows changed (by the user)."""

        def __init__(self, column: str | None, reverse: bool) -> None:
            super().__init__()
            self.column = column
            self.reverse = reverse

    def __init__(self, *, id: str | None = None) -> None:
        self._docs: list[dict[str, Any]] = []  # before DataTable's own setup, which counts the rows
        self._keys: tuple[str, ...] = PLAIN
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._result_docs: list[dict[str, Any]] = []
        self._titles: dict[str, str] = {}
        self._layout: tuple[int, tuple[str, ...]] = (0, ())
        #: Gives the snippets of these images (None: no keywords, no Match column).
        self.snippets: Callable[[list[str]], dict[str, str]] | None = None
        self.sort_column: str | None = None
        self.sort_reverse = False

    def _set_columns(self) -> bool:
        """(Re)create the columns for the current width (True: they changed, the rows are to rebuild)."""
        keys: tuple[str, ...] = MATCHED if self.snippets is not None else PLAIN
        if self.size.width >= WIDE and any("Prediction" in d for d in self._docs[:1]):
            keys += ("model",)
        fixed = sum(COLUMNS[k][1] or 0 for k in keys) + 2 * self.cell_padding * len(keys) + 2  # + scrollbar
        spare = max(MIN_DIAGNOSIS, self.size.width - fixed)
        if (spare, keys) == self._layout:
            return False
        self._layout, self._keys = (spare, keys), keys
        flexible = [k for k in keys if COLUMNS[k][1] is None]
        share = {k: spare // len(flexible) for k in flexible}
        self.clear(columns=True)
        for key in keys:
            label, column_width, _ = COLUMNS[key]
            if key == self.sort_column:
                label += " ▼" if self.sort_reverse else " ▲"
            self.add_column(label, width=column_width or share[key], key=key)
        return True

    def on_resize(self, event: events.Resize) -> None:
        cursor = self.cursor_row
        if self._set_columns():
            self._refill(cursor)

    def show(self, images: list[dict[str, Any]], titles: dict[str, str], *, keep_cursor: bool = False,
             snippets: Callable[[list[str]], dict[str, str]] | None = None) -> None:
        """Replace the rows with these images, from the top (or where the cursor was)."""
        row = self.cursor_row if keep_cursor else 0
        self._result_docs, self._titles = images, titles
        self._docs = self._sorted(images)
        self.snippets = snippets
        self._set_columns()
        self._refill(row)

    @property
    def names(self) -> list[str]:
        """Every image of the result, in the order shown."""
        return [d["image"] for d in self._docs]

    @property
    def current_name(self) -> str | None:
        """The image under the cursor."""
        if not self.row_count or self.cursor_row >= len(self._docs):
            return None
        return self._docs[self.cursor_row]["image"]

    def go_to(self, name: str) -> None:
        """Put the cursor on an image of the result."""
        names = self.names
        if name in names:
            self.move_cursor(row=names.index(name), animate=False)

    # -- sorting ---------------------------------------------------------------------
    def sort_by(self, column: str | None, reverse: bool = False) -> None:
        """Order the rows by a column (None: the result's own order); the cursor stays on its image."""
        current = self.current_name
        self.sort_column, self.sort_reverse = column, reverse
        self._docs = self._sorted(self._result_docs)
        self._layout = (0, ())  # headers show the order
        self._set_columns()
        self._refill(0)
        if current is not None:
            self.go_to(current)
        self.post_message(self.Sorted(column, reverse))

    def _sorted(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        column = self.sort_column
        if column is None or column not in COLUMNS:
            return list(docs)
        path = COLUMNS[column][2]
        snippets = self.snippets([d["image"] for d in docs]) if column == "match" and self.snippets else {}

        def key(doc: dict[str, Any]) -> tuple[int, Any]:
            if column == "title":
                value: Any = self._titles.get(doc.get("U_id", ""), "")
            elif column == "match":
                value = str(Cell(snippets.get(doc["image"], "")))
            elif column == "model":
                value = model_confidence(doc.get("Prediction"))
            else:
                value = value_at(doc, path)
            text = "" if value is None else str(value)
            number = _number(text)
            return (0, number) if number is not None else (1, text.casefold())

        return sorted(docs, key=key, reverse=self.sort_reverse)

    def action_sort_next(self) -> None:
        keys = (None, *self._keys)
        position = keys.index(self.sort_column) if self.sort_column in keys else 0
        self.sort_by(keys[(position + 1) % len(keys)], False)

    def action_sort_reverse(self) -> None:
        if self.sort_column is not None:
            self.sort_by(self.sort_column, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        column = str(event.column_key.value)
        self.sort_by(column, not self.sort_reverse if column == self.sort_column else False)

    # -- rows built when drawn -------------------------------------------------------
    # DataTable keeps a key, a Row and the cells of every row, and finds a line's row in a list
    # of every line; here row i is self._docs[i], all rows one line high, and those records
    # exist only for the rows drawn or visited so far (built a PAGE at a time by _row_key).
    def _refill(self, row: int) -> None:
        """Forget the rows built so far (of another result, order or layout); the cursor on ``row``."""
        self.clear()
        if self.is_mounted:  # the scrollbar has the whole result now, not after the next idle
            self._require_update_dimensions = False
            self._update_dimensions(())
        if self.row_count:
            self._highlight_cursor()  # as DataTable does when a first row arrives
            if row:
                self.move_cursor(row=min(row, self.row_count - 1), animate=False)

    def _row_key(self, index: int) -> RowKey | None:
        """The key of row ``index``, building its block of rows when it has none yet
        (None: no such row, or the columns are being rebuilt)."""
        key = self._row_locations.get_key(index)
        if key is None and 0 <= index < len(self._docs) and len(self.columns) == len(self._keys):
            start = index - index % PAGE
            chunk = self._docs[start: start + PAGE]
            snippets = self.snippets([d["image"] for d in chunk]) if self.snippets is not None else {}
            columns = [column.key for column in self.ordered_columns]
            for offset, doc in enumerate(chunk, start):
                if self._row_locations.get_key(offset) is None:
                    new = RowKey()
                    self._row_locations[new] = offset
                    self._data[new] = dict(zip(columns, self._cells(doc, snippets), strict=True))
                    self.rows[new] = Row(new, 1)
            key = self._row_locations.get_key(index)
        return key

    def _cells(self, doc: dict[str, Any], snippets: dict[str, str]) -> tuple[Cell, ...]:
        desc = doc.get("Description") or {}
        values = {"image": doc["image"], "case": doc["U_id"], "title": self._titles.get(doc["U_id"], ""),
                  "mod": doc.get("Type"), "plane": desc.get("Plane"), "location": doc.get("Location"),
                  "match": snippets.get(doc["image"], ""), "model": _model_cell(doc.get("Prediction"))}
        return tuple(Cell(" ".join(str(values[k] or "").split())) for k in self._keys)

    @property
    def row_count(self) -> int:
        """Every image of the result (built or not)."""
        return len(self._docs) if len(self.columns) == len(self._keys) else 0

    @property
    def ordered_rows(self) -> Sequence[Row]:  # type: ignore[override]
        return _Rows(self)

    @property
    def _y_offsets(self) -> list[tuple[RowKey, int]]:
        return []  # DataTable's list of every line: not kept (see _get_offsets)

    @property
    def _total_row_height(self) -> int:
        return self.row_count

    def _get_offsets(self, y: int) -> tuple[RowKey, int]:
        if self.show_header:
            if y < self.header_height:
                return self._header_row_key, y
            y -= self.header_height
        key = self._row_key(y) if y < self.row_count else None
        if key is None:
            raise LookupError(f"no row at line {y}")
        return key, 0

    def is_valid_row_index(self, row_index: int) -> bool:
        return 0 <= row_index < self.row_count

    def _row_y(self, row_index: int) -> int:
        return row_index + (self.header_height if self.show_header else 0)

    def _get_row_region(self, row_index: int) -> Region:
        if not self.is_valid_row_index(row_index):
            return Region(0, 0, 0, 0)
        width = sum(column.get_render_width(self) for column in self.columns.values()) + self._row_label_column_width
        return Region(0, self._row_y(row_index), max(self.size.width, width), 1)

    def _get_cell_region(self, coordinate: Coordinate) -> Region:
        if not self.is_valid_coordinate(coordinate):
            return Region(0, 0, 0, 0)
        columns = self.ordered_columns
        x = sum(column.get_render_width(self) for column in columns[:coordinate.column]) + self._row_label_column_width
        return Region(x, self._row_y(coordinate.row), columns[coordinate.column].get_render_width(self), 1)

    def get_row_at(self, row_index: int) -> list[Cell]:
        if self._row_key(row_index) is None:
            raise RowDoesNotExist(f"Row index {row_index!r} is not valid.")
        return super().get_row_at(row_index)

    def coordinate_to_cell_key(self, coordinate: Coordinate) -> CellKey:
        self._row_key(coordinate.row)
        return super().coordinate_to_cell_key(coordinate)

    def _highlight_row(self, row_index: int) -> None:
        self.refresh_row(row_index)
        key = self._row_key(row_index)
        if key is not None:
            self.post_message(DataTable.RowHighlighted(self, row_index, key))

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - (self.header_height if self.show_header else 0))

    def action_page_down(self) -> None:
        """As DataTable's, without walking every row below the cursor."""
        self._set_hover_cursor(False)
        self.scroll_relative(y=self._page(), animate=False, force=True)
        self.move_cursor(row=min(self.cursor_row + self._page(), self.row_count - 1), scroll=False)

    def action_page_up(self) -> None:
        """As DataTable's, without walking every row above the cursor."""
        self._set_hover_cursor(False)
        self.scroll_relative(y=-self._page(), animate=False)
        self.move_cursor(row=max(self.cursor_row - self._page(), 0), scroll=False)


class _Rows(Sequence[Row]):
    """DataTable's ordered rows, each built when asked for (the list would hold every row)."""

    def __init__(self, table: ResultsTable) -> None:
        self._table = table

    def __len__(self) -> int:
        return self._table.row_count

    @overload
    def __getitem__(self, index: int) -> Row: ...

    @overload
    def __getitem__(self, index: slice) -> list[Row]: ...

    def __getitem__(self, index: int | slice) -> Row | list[Row]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        position = index + len(self) if index < 0 else index
        key = self._table._row_key(position) if 0 <= position < len(self) else None
        if key is None:
            raise IndexError(index)
        return self._table.rows[key]


#: Location categories as the Model column writes them (it must fit :data:`COLUMNS` at :data:`WIDE`).
SHORT_LOCATION = {"Spine and Muscles": "Spine", "Reproductive and Urinary System": "Uro", "Abdomen": "Abd",
                  "Thorax": "Thor"}


def _probability(value: Any) -> str:
    """Three characters: ".97", and "1.0" for what rounds to one."""
    text = f"{float(value):.2f}"
    return "1.0" if text == "1.00" else text.removeprefix("0")


def _model_cell(prediction: Any) -> str:
    """"MR .97 Head .81": the model's modality and location, each with its probability.

    Empty for a bundle without a model; a task the prediction lacks is left out. Long
    location categories are shortened (:data:`SHORT_LOCATION`) so the cell fits its 16
    columns, which leave the diagnosis its :data:`MIN_DIAGNOSIS` at a table :data:`WIDE` wide.
    """
    if not isinstance(prediction, dict):
        return ""
    parts = []
    for task in ("modality", "location"):
        answer, p = prediction.get(task), prediction.get(f"{task}_p")
        if answer is not None and p is not None:
            name = SHORT_LOCATION.get(str(answer), str(answer)) if task == "location" else str(answer)
            parts.append(f"{name} {_probability(p)}")
    return " ".join(parts)


def model_confidence(prediction: Any) -> float | None:
    """The Model column's sort key: the lower of the modality's and the location's probability.

    A researcher reviewing where labels and the model disagree wants first the images the
    model is unsure of in either task: its weaker answer is the one most likely wrong, and
    sorting by the modality alone hid a doubtful location behind a confident modality (on
    the release the location is the lower one for 2017 of 2050 images). One task alone is
    reviewed with its facet ("Prediction vs location category: differs") and this sort.
    None (sorted last) without a prediction.
    """
    if not isinstance(prediction, dict):
        return None
    values = [float(v) for v in (prediction.get("modality_p"), prediction.get("location_p")) if v is not None]
    return min(values) if values else None


def _number(text: str) -> float | None:
    """A whole or decimal number as a number (ages sort 9 before 89), else None."""
    try:
        return float(text) if text.strip() and text.strip().lstrip("-").replace(".", "", 1).isdigit() else None
    except ValueError:
        return None

