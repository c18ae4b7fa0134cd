"""Similar cases from a history (F7): type one, or rank the cases like the open one.

The ranking is :func:`medpix_tui.model.case_text.similar_cases`: cosine between MiniLM
sentence embeddings of the query and of each case's history and findings. The sentence
model (MiniLM in numpy) takes a fraction of a second to load, so it loads in a thread worker from the
first key (the history dialog says when it is ready) and is kept on the app
(``app.sentence_encoder``): later queries take tens of milliseconds. Enter on a listed case
opens it; ``n`` and ``p`` there walk down the list.
"""

from __future__ import annotations

import threading
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input, Label, LoadingIndicator, Static
from textual.worker import get_current_worker

from ...errors import InputError, MedpixError
from ..app import GuardedScreen, MedpixApp, alive, medpix
from ..widgets.footer import KeyFooter
from ..widgets.header import SafeHeader
from ..widgets.plain_table import PlainTable
from .dialogs import FormDialog

#: How many cases a query lists.
K = 25
_LOADING = threading.Lock()


def sentence_encoder(app: MedpixApp) -> Any:
    """The app's sentence encoder, loaded on first use (in a thread: it reads 90 MB of weights)."""
    with _LOADING:
        if app.sentence_encoder is None:
            from ...model.case_text import SentenceEncoder

            app.sentence_encoder = SentenceEncoder()
        return app.sentence_encoder


def preload(app: MedpixApp) -> None:
    """Start loading the encoder now, so it is ready when the query is typed."""
    if app.sentence_encoder is None:
        app.run_worker(lambda: _quiet_load(app), thread=True, group="sentence-model", name="sentence model")


def _quiet_load(app: MedpixApp) -> None:
    try:
        sentence_encoder(app)
    except (ImportError, MedpixError, OSError):
        pass  # the query's own worker reports it


def similar_cases_action(app: MedpixApp) -> None:
    """F7: cases like the open case on a case screen, else from a typed history."""
    from .case import CaseScreen

    screen = app.screen
    preload(app)
    if isinstance(screen, CaseScreen) and screen.case is not None:
        from ...model.case_text import query_of_case

        uid = screen.case["U_id"]
        try:
            text = query_of_case(screen.case)
        except InputError as exc:  # the case has no text: said as the CLI says it
            app.notify(str(exc), severity="warning")
            return
        app.push_screen(SimilarCasesScreen(text, f"cases like {uid}", exclude=frozenset({uid})))
        return
    if isinstance(screen, HistoryDialog):
        return

    def chosen(text: str | None) -> None:
        if text:
            app.push_screen(SimilarCasesScreen(text, "cases like the history typed"))

    app.push_screen(HistoryDialog(), chosen)


def _cut(text: str | None, width: int = 40) -> str:
    """One table cell: long titles cut with an ellipsis, so the diagnosis and split stay in sight."""
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[:width - 1] + "…"


class HistoryDialog(FormDialog[str]):
    """Type a history (and findings) to find the cases that read most alike."""

    CSS_PATH = "similar.tcss"

    def compose(self) -> ComposeResult:
        with Vertical(id="history-dialog", classes="dialog") as box:
            box.border_title = "Similar cases"
            yield Label("The history (and findings) of a patient; Enter ranks the cases:", classes="hint")
            yield Input(placeholder="e.g. 54 year old woman with sudden severe headache", id="history-text")
            yield Static("Loading the sentence model…", id="history-model", markup=False)
            yield self.buttons("Find", "history-find", "history-cancel")

    def on_mount(self) -> None:
        self.query_one("#history-text", Input).focus()
        self._wait_for_model()

    @work(thread=True, exclusive=True, group="history-model")
    def _wait_for_model(self) -> None:
        try:
            sentence_encoder(medpix(self))
            message = "The sentence model is ready."
        except ImportError as exc:
            message = f"The sentence model cannot load: {exc.name} is not installed."
        except (MedpixError, OSError) as exc:
            message = f"The sentence model cannot load: {exc}"
        if not get_current_worker().is_cancelled and alive(self):
            self.app.call_from_thread(self._model_state, message)

    def _model_state(self, message: str) -> None:
        if alive(self):
            self.query_one("#history-model", Static).update(message)

    def submit(self) -> None:
        text = self.query_one("#history-text", Input).value.strip()
        if not text:
            self.notify("Type a history first", severity="warning", timeout=2)
            return
        self.dismiss(text)


class SimilarCasesScreen(GuardedScreen):
    """The cases whose history and findings read most like a query, best first."""

    CSS_PATH = "similar.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Back to where F7 was pressed"),
        Binding("ctrl+o", "open_case", "Open case", tooltip="Read the highlighted case (Enter too)"),
    ]

    def __init__(self, text: str, label: str, *, exclude: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.text = text
        self.label = label
        self.exclude = exclude
        #: The ranked cases once found (``similar_cases`` rows).
        self.rows: list[dict[str, Any]] = []
        #: The first image of each listed case: what Enter opens.
        self.names: list[str] = []

    def compose(self) -> ComposeResult:
        yield SafeHeader()
        yield Static(self.text, id="similar-query", markup=False)
        yield Static("", id="similar-status", markup=False)
        yield LoadingIndicator(id="similar-loading")
        yield PlainTable(id="similar-table", cursor_type="row", zebra_stripes=True)
        yield KeyFooter()

    def on_mount(self) -> None:  # GuardedScreen's own on_mount runs too (Textual dispatches along the MRO)
        self.title = "Similar cases"
        self.sub_title = self.label
        self.query_one("#similar-table").display = False
        loaded = medpix(self).sentence_encoder is not None
        self._state("Ranking the cases…" if loaded else
                    "Loading the sentence model…")
        self._rank()

    def _state(self, text: str) -> None:
        if alive(self):
            self.query_one("#similar-status", Static).update(text)

    @work(thread=True, exclusive=True, group="similar")
    def _rank(self) -> None:
        from ...model.case_text import similar_cases

        app = medpix(self)
        worker = get_current_worker()
        try:
            encoder = sentence_encoder(app)
            if worker.is_cancelled:
                return
            self.app.call_from_thread(self._state, "Ranking the cases…")
            with app.store_lock:
                rows = similar_cases(app.bundle, self.text, K, encoder=encoder, exclude=self.exclude)
                firsts = {r["case"]: next(iter(app.store.images_of_case(r["case"])), {}).get("image") for r in rows}
        except ImportError as exc:
            message = f"The sentence model needs {exc.name}, which is not installed"
        except (MedpixError, OSError) as exc:
            message = str(exc)
        else:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._fill, rows, firsts)
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._failed, message)

    def _failed(self, message: str) -> None:
        if not alive(self):
            return
        self.query_one("#similar-loading").display = False
        self._state(f"No ranking: {message}")
        self.notify(message, title="Similar cases", severity="error")

    def _fill(self, rows: list[dict[str, Any]], firsts: dict[str, str | None]) -> None:
        if not alive(self):
            return
        self.rows = [r for r in rows if firsts.get(r["case"])]
        self.names = [firsts[r["case"]] or "" for r in self.rows]
        table = self.query_one("#similar-table", DataTable)
        table.clear(columns=True)
        table.add_columns("#", "score", "case", "title", "diagnosis", "split")
        for i, row in enumerate(self.rows):
            table.add_row(str(i + 1), f"{row['score']:.3f}", row["case"], _cut(row["title"]), _cut(row["diagnosis"]),
                          row["split"] or "", key=row["case"])
        self.query_one("#similar-loading").display = False
        table.display = True
        table.focus()
        self._state(f"{len(self.rows)} cases, most alike first (cosine of MiniLM sentence embeddings of history "
                    "and findings) · Enter opens one, n/p there walk the list")

    def action_back(self) -> None:
        self.dismiss()

    @on(DataTable.RowSelected, "#similar-table")
    def action_open_case(self) -> None:
        """Open the highlighted case, with the list to step through (as the search screen does)."""
        from .case import CaseScreen

        if self.app.screen is not self or not alive(self) or not self.names:
            return
        table = self.query_one("#similar-table", DataTable)
        self.app.push_screen(CaseScreen(self.names, table.cursor_row, follow=self._follow))

    def _follow(self, name: str) -> None:
        if alive(self) and name in self.names:
            self.query_one("#similar-table", DataTable).move_cursor(row=self.names.index(name))
