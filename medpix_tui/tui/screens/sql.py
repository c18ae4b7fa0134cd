"""SQL over the bundle's Parquet with DuckDB, in the manner of Harlequin.

A schema sidebar (tables and columns; pick one to insert it), an editor, the result in a
table, past queries under History (kept across sessions when the app has a history file),
an export of the full result, and any cell read whole (Enter). Statements run in the sandbox
of :mod:`medpix_tui.sql` (no file access, a time and memory limit); Esc stops a running one.
"""

from __future__ import annotations

import decimal
import json
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Label,
    OptionList,
    Static,
    TextArea,
    Tree,
)
from textual.widgets.option_list import Option
from textual.worker import get_current_worker

from ...atomic import write_atomic
from ...bundle import read_regular
from ...errors import MedpixError
from ...render import counted
from ...sql import MAX_RESULT_ROWS, MAX_SQL_CHARS, Cancelled, Preview, explain_text, jsonable
from ..app import NARROW, focus_now, medpix, takes_text
from ..saving import SaveOption, document_options, save_interactively
from ..widgets.footer import KeyFooter
from ..widgets.header import SafeHeader
from ..widgets.plain_table import PlainTable
from .dialogs import ValueDialog

DEFAULT_SQL = "SELECT modality, location_category, count(*) AS images\nFROM images\nGROUP BY ALL\nORDER BY images DESC"
#: Rows drawn in the table (DataTable measures every cell); exports take every row (up to MAX_RESULT_ROWS).
MAX_ROWS = 500


class SqlScreen(Screen[None]):
    """An editor, a schema browser, history and a result table over DuckDB."""

    CSS_PATH = "sql.tcss"
    BINDINGS = [
        Binding("ctrl+j", "run_query", "Run", tooltip="Run the query (also F5)"),
        Binding("f5", "run_query", "Run", show=False),
        Binding("ctrl+s", "export", "Export", tooltip="Save the whole result as JSON, JSONL or Parquet"),
        Binding("f8", "history", "History", tooltip="Pick a past query"),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar",
                tooltip="Show or hide tables and history (hidden at first below 100 columns)"),
        Binding("ctrl+e", "focus_editor", "Editor", show=False, priority=True, tooltip="Back to the editor"),
        # priority: the editor would take Esc to move focus; check_action lets it do so when nothing runs
        Binding("escape", "cancel_query", "Cancel", show=False, priority=True, tooltip="Stop the running query"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._con: Any = None
        self._history: list[str] = []
        #: Statements of the history that failed (kept, marked, so a typo is fixed rather than retyped).
        self._failed: set[str] = set()
        self._last_query = ""
        #: the last answer as drawn (its rows are all of them when ``total`` is no more than they)
        self._last_result = Preview([], [], 0)
        #: Whether the sidebar was shown or hidden by a key (then a resize leaves it so).
        self._sidebar_chosen: bool | None = None

    def compose(self) -> ComposeResult:
        yield SafeHeader()
        with Horizontal(id="sql-body"):
            with Vertical(id="sql-sidebar"):
                tree: Tree[str] = Tree("Tables", id="schema")
                tree.show_root = False
                yield tree
                yield Label("History", classes="section")
                yield OptionList(id="history")
            with Vertical(id="sql-main"):
                yield TextArea.code_editor(DEFAULT_SQL, id="editor", soft_wrap=True)
                with Horizontal(id="sql-status-row"):
                    yield Static("ctrl+j or F5 runs the query", id="sql-status", markup=False)
                    yield Static(id="sql-time", markup=False)
                yield PlainTable(id="sql-results", zebra_stripes=True)
        yield KeyFooter()

    def on_mount(self) -> None:
        editor = self.query_one("#editor", TextArea)
        if "sql" in editor.available_languages:  # tree-sitter-sql, a dependency; a broken install just loses colour
            editor.language = "sql"
        editor.focus()
        self._load_schema()

    def on_resize(self) -> None:
        """Below :data:`NARROW` columns the sidebar starts hidden (ctrl+b brings it back), as the facets do."""
        if self._sidebar_chosen is None:
            self.query_one("#sql-sidebar").display = self.size.width >= NARROW

    def _connection(self) -> Any:
        """The DuckDB connection, opened on first use (call with the lock held)."""
        if self._con is None:
            from ...sql import connect

            self._con = connect(medpix(self).bundle.parquet_dir)
        return self._con

    @work(thread=True, exclusive=True, group="sql-schema")
    def _load_schema(self) -> None:
        from ...sql import TABLES, run_sql

        history, self._failed = _read_history(medpix(self).history_path)
        try:
            with self._lock:
                con = self._connection()
                schema = {t: run_sql(con, f"DESCRIBE {t}")[1] for t in TABLES}
        except MedpixError as exc:
            self.app.call_from_thread(self._error, str(exc))
            schema = {}
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show_schema, schema, history)

    def _show_schema(self, schema: dict[str, list[tuple[Any, ...]]], history: list[str]) -> None:
        tree = self.query_one("#schema", Tree)
        for table, columns in schema.items():
            node = tree.root.add(Text(table, style="bold"), data=table, expand=table == "images")
            for column in columns:
                label = Text.assemble(str(column[0]), " ", (_short_type(str(column[1])), "dim"))
                node.add_leaf(label, data=str(column[0]))
        self._history = history
        self._show_history()

    def _show_history(self) -> None:
        options = self.query_one("#history", OptionList)
        options.clear_options()
        options.add_options([Option(_history_entry(q, q in self._failed)) for q in self._history])

    # -- running -------------------------------------------------------------------
    def action_run_query(self) -> None:
        query = self.query_one("#editor", TextArea).text
        if not query.strip():  # spaces and blank lines: say so where the answer would be, and in a notice
            self.query_one("#sql-status", Static).update(Text(NOTHING_TO_RUN, style="bold"))
            self.query_one("#sql-time", Static).update("")
            self.notify(NOTHING_TO_RUN, title="SQL", severity="warning")
            return
        if self._con is not None:  # a statement still running gives way to the new one (it queued behind it)
            self._con.interrupt("replaced")
        # the last answer's rows stay (dimmed) until the new one comes, but not its status and time
        self.query_one("#sql-status", Static).update("Running… (Esc stops it)")
        self.query_one("#sql-time", Static).update("running")
        self.query_one("#sql-results").add_class("-stale")
        self._execute(query)

    @work(thread=True, exclusive=True, group="sql")
    def _execute(self, query: str) -> None:
        try:
            with self._lock:
                started = time.perf_counter()  # its own time, not the wait for a statement it replaced
                # the rows drawn, and how many there are up to the export's limit (so the status line is true)
                result = self._connection().preview(query, MAX_ROWS)
        except MedpixError as exc:
            if get_current_worker().is_cancelled:  # replaced by a newer statement: that one answers
                return
            # a statement stopped with Esc is kept in the history unmarked: it did not fail
            history = self._remember(query, failed=not isinstance(exc, Cancelled))
            self.app.call_from_thread(self._error, str(exc), history)
            return
        elapsed = time.perf_counter() - started
        history = self._remember(query, failed=False)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._show, query, result, elapsed, history)

    def _remember(self, query: str, *, failed: bool) -> list[str]:
        """The history with this statement first (a failed one marked), as written for the next session."""
        history = ([query] + [q for q in self._history if q != query])[:MAX_HISTORY]
        if failed:
            self._failed.add(query)
        else:
            self._failed.discard(query)
        _write_history(medpix(self).history_path, history, self._failed)
        return history

    def _show(self, query: str, result: Preview, elapsed: float, history: list[str]) -> None:
        columns, rows, total = result.columns, result.rows, result.total
        self._last_query = query
        self._last_result = result
        table = self.query_one("#sql-results", DataTable)
        table.clear(columns=True)
        table.remove_class("-stale")
        plan = explain_text(columns, rows)
        if plan is not None:  # EXPLAIN: the plan's lines as rows, not one cell cut to a line
            table.add_column(" · ".join(str(row[0]) for row in rows))
            table.add_rows([(Text(line, no_wrap=True),) for line in plan.splitlines()[:MAX_ROWS]])
        else:
            table.add_columns(*columns)
            table.add_rows([tuple(_cell(v) for v in row) for row in rows[:MAX_ROWS]])
        self.query_one("#sql-status", Static).update(Text(_result_line(total, len(columns))))
        self.query_one("#sql-time", Static).update(f"{elapsed * 1000:.0f} ms")
        self._history = history
        self._show_history()

    def _error(self, message: str, history: list[str] | None = None) -> None:
        if history is not None:
            self._history = history
            self._show_history()
        self.query_one("#sql-status", Static).update(Text(message, style="bold red"))
        self.query_one("#sql-time", Static).update("")
        table = self.query_one("#sql-results", DataTable)
        table.clear(columns=True)  # the last rows would read as this answer
        table.remove_class("-stale")
        self._last_query = ""
        self.notify(message, title="SQL", severity="error", timeout=5)

    @on(DataTable.CellSelected, "#sql-results")
    def _read_cell(self, event: DataTable.CellSelected) -> None:
        """Enter (or a click) on a cell shows its value whole: a cell is cut to one line of CELL_WIDTH."""
        columns, rows = self._last_result.columns, self._last_result.rows
        plan = explain_text(columns, rows)
        if plan is not None:
            self.app.push_screen(ValueDialog(" · ".join(str(row[0]) for row in rows), plan))
            return
        row, column = event.coordinate
        if row < len(rows) and column < len(columns):
            self.app.push_screen(ValueDialog(f"{columns[column]}, row {row + 1}", _whole(rows[row][column])))

    # -- editor helpers --------------------------------------------------------------
    @on(Tree.NodeSelected, "#schema")
    def _insert_name(self, event: Tree.NodeSelected[str]) -> None:
        if event.node.data and not event.node.allow_expand:
            editor = self.query_one("#editor", TextArea)
            editor.insert(f'"{event.node.data}"' if not event.node.data.isidentifier() else event.node.data)
            editor.focus()

    @on(OptionList.OptionSelected, "#history")
    def _recall(self, event: OptionList.OptionSelected) -> None:
        editor = self.query_one("#editor", TextArea)
        editor.load_text(self._history[event.option_index])
        editor.focus()

    def action_history(self) -> None:
        self.query_one("#sql-sidebar").display = self._sidebar_chosen = True
        history = self.query_one("#history", OptionList)
        if history.option_count and history.highlighted is None:
            history.highlighted = 0
        history.focus()

    def action_toggle_sidebar(self) -> None:
        sidebar = self.query_one("#sql-sidebar")
        sidebar.display = self._sidebar_chosen = not sidebar.display

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Esc cancels only while a statement runs; ctrl+e moves to the editor from outside it."""
        if action == "cancel_query":
            return self._con is not None and self._con.running
        if action == "focus_editor":  # in the editor, ctrl+e is its own (the end of the line)
            return not takes_text(self)
        return True

    def action_cancel_query(self) -> None:
        """Stop the statement DuckDB is running at once; its worker then shows "SQL statement cancelled"."""
        if self._con is not None and self._con.interrupt("cancelled"):
            self.query_one("#sql-status", Static).update("Cancelling…")

    def action_focus_editor(self) -> None:
        focus_now(self.query_one("#editor", TextArea))

    @work(exclusive=True, group="save")
    async def action_export(self) -> None:
        """Save every row of the last query's result: the rows drawn when they are all of them (so
        ``ORDER BY random()`` saves what the screen shows), else the statement run again whole."""
        if self._con is not None and self._con.running:  # the last answer would be saved as the new one's
            self.notify("A query is running: save once it has answered, or Esc to stop it", severity="warning")
            return
        if not self._last_query:
            self.notify("Run a query first", severity="warning")
            return
        query, shown = self._last_query, self._last_result

        def write(fmt: str, path: Path, force: bool) -> Path:
            from ...export import save_sql_result

            result = shown
            if shown.total > len(shown.rows):  # not all drawn: the statement runs again whole
                with self._lock:
                    result = self._connection().result(query)
            # the library writes the file and its manifest (the statement, the bundle's digest, the sha256)
            return save_sql_result(query, result.columns, result.rows, path, fmt, bundle=medpix(self).bundle,
                                   force=force, types=result.types).files[0]

        options = [*document_options("Result", "medpix-sql", write),
                   SaveOption("Result as CSV", "medpix-sql.csv", partial(write, "csv"))]
        await save_interactively(medpix(self), "Export the SQL result", options)

    def on_unmount(self) -> None:
        if self._con is not None:
            self._con.close()


NOTHING_TO_RUN = "Nothing to run: type a query first"


def _result_line(total: int, columns: int) -> str:
    """The status line of a result of ``total`` rows (counted up to the export's limit, and one past it)."""
    shape = f"{counted(min(total, MAX_RESULT_ROWS), 'row')} · {counted(columns, 'column')}"
    if total > MAX_RESULT_ROWS:  # an export runs the statement whole, and refuses more than the limit
        return f"more than {shape} ({MAX_ROWS} shown; too many to export, the limit is {MAX_RESULT_ROWS}: add a LIMIT)"
    return f"{shape} ({MAX_ROWS} shown; export runs it again for all)" if total > MAX_ROWS else shape


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _short_type(sql_type: str) -> str:
    return sql_type if len(sql_type) <= 12 else "STRUCT" if sql_type.startswith("STRUCT") else sql_type[:11] + "…"


#: A result cell shows at most this many characters (the export keeps every one).
CELL_WIDTH = 60


def _cell(value: Any) -> Text:
    """A value as table text: numbers right-aligned, long text cut, never parsed as markup."""
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return Text(str(value), justify="right")
    text = json.dumps(jsonable(value), ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
    return Text(_one_line(text, CELL_WIDTH), no_wrap=True)


def _whole(value: Any) -> str:
    """A value as the cell viewer shows it: all of its text, structures as indented JSON."""
    if value is None:
        return "NULL"
    if isinstance(value, (dict, list)):
        return json.dumps(jsonable(value), ensure_ascii=False, indent=2)
    return str(value)


MAX_HISTORY = 100
#: A history file larger than this is not read (100 queries of a few kB each are far less).
HISTORY_LIMIT = 4 << 20
#: A past statement shows this many of its lines (the rest is counted).
HISTORY_LINES = 8


def _history_entry(query: str, failed: bool) -> Content:
    """A past statement as written, wrapped to the sidebar (up to a few lines), a failed one marked."""
    lines = query.strip().splitlines() or [""]
    shown = "\n".join(line.rstrip() for line in lines[:HISTORY_LINES])
    if len(lines) > HISTORY_LINES:
        shown += f"\n… ({len(lines) - HISTORY_LINES} more lines)"
    return Content.assemble(("✗ failed\n", "bold red"), shown) if failed else Content(shown)


def _read_history(path: Path | None) -> tuple[list[str], set[str]]:
    """Past statements, newest first, and those that failed.

    A missing, oversized, irregular (a FIFO) or malformed file is an empty history; an entry
    longer than its share of the file, or than a statement may be, is dropped.
    """
    if path is None:
        return [], set()
    try:  # a regular file of bounded size: a FIFO or a huge file is no history
        data = json.loads(read_regular(Path(path), HISTORY_LIMIT))
    except (OSError, ValueError, RecursionError):
        return [], set()
    if not isinstance(data, list):
        return [], set()
    longest = min(MAX_SQL_CHARS, HISTORY_LIMIT // MAX_HISTORY)
    history: list[str] = []
    failed: set[str] = set()
    for entry in data:  # a statement, or {"sql": ..., "failed": true}
        sql = entry.get("sql") if isinstance(entry, dict) else entry
        if isinstance(sql, str) and 0 < len(sql) <= longest:
            history.append(sql)
            if isinstance(entry, dict) and entry.get("failed") is True:
                failed.add(sql)
    return history[:MAX_HISTORY], failed


def _write_history(path: Path | None, history: list[str], failed: set[str] | None = None) -> None:
    """Keep the history for the next session (atomically); a read-only home only loses it."""
    if path is None:
        return
    failed = failed or set()
    data = [{"sql": q, "failed": True} if q in failed else q for q in history]
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(path), json.dumps(data, ensure_ascii=False, indent=0))
    except (OSError, MedpixError):
        pass
