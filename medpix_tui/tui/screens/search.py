"""The main screen: keyword search, the authors' field query and facets over one results table.

A key after a pause searches at once; keys in quick succession wait for the typing to pause
(:data:`DEBOUNCE`), so a burst costs one search. The search runs in a thread worker under the
store lock and only the newest answer reaches the table; facet counts follow once the table
is on screen, so they never delay it. The first page kept by the last start
(:mod:`..first_page`) is drawn before the store opens, and the store's answer replaces it.
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Input, Label, Static
from textual.worker import get_current_worker

from ...errors import InputError, MedpixError
from ...render import counted
from ...search import keyword_hint
from ...session import (
    SearchRequest,
    SearchResult,
    case_titles,
    count_facets,
    fill_snippets,
    highlight_pattern,
    run_search,
)
from ...store import CASES, IMAGES
from ..app import NARROW, MedpixApp, alive, copy_id, focus_now, medpix
from ..first_page import write_first_page
from ..saving import SaveOption, Writer, dataset_options, document_options, save_interactively
from ..widgets.facets import FacetPanel
from ..widgets.field_query import FieldQuery
from ..widgets.footer import KeyFooter
from ..widgets.header import SafeHeader
from ..widgets.results import ResultsTable

NO_MATCH = "No images match. Loosen the query or press ctrl+r to reset."
#: A key after this many quiet seconds searches at once; faster typing waits for a pause this long.
DEBOUNCE = 0.1
#: How many images the model's answers list.
MODEL_K = 50
#: Seconds from drawing the kept first page to opening the store. The frame reaches the terminal
#: first: a thread reading the store would hold the interpreter while Textual's writer thread
#: waits to send it (in a pseudo-terminal, rows arrived 0.25 s later without this pause).
OPEN_STORE_AFTER = 0.1


class SearchScreen(Screen[None]):
    """Search, filter and pick an image to read its case."""

    CSS_PATH = "search.tcss"
    BINDINGS = [
        Binding("ctrl+f", "focus_search", "Search box", show=False, priority=True, tooltip="Back to the search box"),
        Binding("ctrl+o", "open_case", "Open case", tooltip="Read the case of the highlighted image"),
        Binding("ctrl+s", "save", "Save", tooltip="Save the results (JSON, JSONL, Parquet) or their images"),
        Binding("ctrl+r", "reset", "Reset", tooltip="Clear keywords, field query and facets"),
        Binding("ctrl+b", "toggle_facets", "Facets",
                tooltip="Show or hide the facets (hidden at first below 100 columns)"),
        Binding("down", "focus_results", "Results", show=False, tooltip="Move into the results table"),
        Binding("ctrl+g", "similar", "Similar images", show=False,
                tooltip="Images that look like the highlighted one (needs a bundle with a model)"),
        Binding("ctrl+n", "meaning", "Search by meaning", show=False,
                tooltip="Rank images by the model's reading of the search text (needs a bundle with a model)"),
        Binding("ctrl+y", "copy", "Copy id", show=False,
                tooltip="Copy the highlighted image's id (OSC 52: works over SSH)"),
        Binding("c", "copy", "Copy id", show=False, tooltip="Copy the highlighted image's id (in the results)"),
    ]

    class ResultsShown(Message):
        """A search result reached the table."""

        def __init__(self, result: SearchResult) -> None:
            super().__init__()
            self.result = result

    class FirstPageShown(Message):
        """The first page kept by the last start is on screen; the store is opening behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.result: SearchResult | None = None
        self._titles: dict[str, str] = {}
        self._titles_loaded = False
        #: The table shows the kept first page, not yet the store's answer.
        self._page_shown = False
        self._universe: dict[str, collections.Counter] | None = None
        self._timer: Timer | None = None
        self._last_key = 0.0
        self._requested: SearchRequest | None = None
        self._facets_chosen: bool | None = None
        self._within: tuple[str, ...] = ()
        self._within_label = ""
        self._model: Any = None
        self._model_loading = False
        self._model_lock = threading.Lock()
        self._model_error = ""
        #: The model request waiting for the model to load, and when it was asked.
        self._model_wanted: tuple[str, str] | None = None
        self._model_started = 0.0
        self._model_ticker: Timer | None = None
        #: Remembered at the last exit, applied as the screen opens (facets once their lists exist).
        self._facets_to_tick: dict[str, frozenset[str]] = {}
        self._position_to_restore: str | None = None

    def compose(self) -> ComposeResult:
        yield SafeHeader()
        with Horizontal(id="search-row"):
            yield Label("Search", classes="row-label")
            yield Input(placeholder="keywords: caption, diagnosis, findings… (e.g. glioma enhancing)", compact=True,
                        id="keywords")
        with Horizontal(id="field-row"):
            yield Label("Fields", classes="row-label")
            yield FieldQuery(id="field-query")
        with Horizontal(id="body"):
            yield FacetPanel(id="facets")
            with Vertical(id="results-box"):
                yield ResultsTable(id="results")
                yield Static(NO_MATCH, id="empty", markup=False)
        yield Static("Loading…", id="status", markup=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#keywords", Input).focus()
        self._restore()
        page = medpix(self).first_page
        if page is None:
            self._search()
            return
        self._page_shown = True
        self._titles = dict(page.titles)
        self.query_one(ResultsTable).show(page.images, self._titles)
        self._status(_summary(page.image_count, page.case_count, False, SearchRequest(), self._totals()))
        self.call_after_refresh(self._first_page_drawn)

    def _restore(self) -> None:
        """Put back the search this bundle was left on (a notice when a kept file was ignored)."""
        app = medpix(self)
        if app.state_dir is None:
            return
        from ..remember import read_state

        state, problem = read_state(app.state_dir, app.bundle)
        if problem:
            self.notify(problem, title="Remembered search", severity="warning", timeout=6)
        if state is None or state.empty:
            return
        request = state.request
        with self.prevent(Input.Changed):
            self.query_one("#keywords", Input).value = request.keywords
        if request.collection != IMAGES or request.pairs:
            self.query_one(FieldQuery).restore(request.collection, request.pairs)
        self._facets_to_tick = dict(request.facets)
        self._position_to_restore = state.position

    def remember(self) -> None:
        """Keep the search on screen and the cursor's image for the next start on this bundle."""
        app = medpix(self)
        if app.state_dir is None or self.result is None or not alive(self):
            return
        from ..remember import Remembered, write_state

        write_state(app.state_dir, app.bundle,
                    Remembered.of(self.result.request, self.query_one(ResultsTable).current_name))

    def _first_page_drawn(self) -> None:
        self.post_message(self.FirstPageShown())
        self.set_timer(OPEN_STORE_AFTER, self._search)  # the store opens behind the drawn page

    def on_resize(self) -> None:
        if self._facets_chosen is None:
            self.query_one(FacetPanel).display = self.size.width >= NARROW

    # -- searching -----------------------------------------------------------------
    def _request(self) -> SearchRequest:
        fq = self.query_one(FieldQuery)
        return SearchRequest(self.query_one("#keywords", Input).value, fq.collection, fq.pairs,
                             self.query_one(FacetPanel).selections, self._within, self._within_label)

    def _schedule(self) -> None:
        """Search now if typing just started, else once it pauses (a burst costs one search)."""
        now = time.monotonic()
        quiet = now - self._last_key > DEBOUNCE
        self._last_key = now
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if quiet:
            self._search()
        else:
            self._timer = self.set_timer(DEBOUNCE, self._search)

    def _search(self) -> None:
        self._timer = None
        request = self._request()
        if request != self._requested:
            self._requested = request
            self._run(request)

    @on(Input.Changed, "#keywords")
    @on(FieldQuery.Changed)
    def _typed(self) -> None:
        self._schedule()

    @on(FacetPanel.Changed)
    def _facets_changed(self) -> None:
        self._search()

    @work(thread=True, exclusive=True, group="search")
    def _run(self, request: SearchRequest) -> None:
        worker = get_current_worker()
        with medpix(self).store_lock:
            if worker.is_cancelled:
                return
            try:
                result = run_search(medpix(self).store, request)  # the first access opens (and checks) the store
            except MedpixError as exc:
                if not worker.is_cancelled:
                    self.app.call_from_thread(self._failed, str(exc))
                return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._show, result)

    def _show_titles(self) -> None:
        if not alive(self):
            return
        if self.result is not None:
            result, store = self.result, medpix(self).store
            snippets = (lambda names: fill_snippets(store, result, names)) if result.keywords else None
            self.query_one(ResultsTable).show(result.images, self._titles, keep_cursor=True, snippets=snippets)

    def _show(self, result: SearchResult) -> None:
        if not alive(self):
            return
        self.result = result
        medpix(self).result = result
        table = self.query_one(ResultsTable)
        # the store's opening listing replaces the kept first page row for row: the cursor stays
        store = medpix(self).store
        snippets = (lambda names: fill_snippets(store, result, names)) if result.keywords else None
        table.show(result.images, self._titles, keep_cursor=self._page_shown and result.request == SearchRequest(),
                   snippets=snippets)
        self._page_shown = False
        empty = not result.images
        table.display = not empty
        placeholder = self.query_one("#empty", Static)
        placeholder.update(NO_MATCH)
        placeholder.remove_class("-error")
        placeholder.display = empty
        self._status(_summary(len(result.images), result.case_count, result.ranked, result.request, self._totals()))
        # the table is drawn first; facet counts follow, so they never delay it
        self.call_after_refresh(self._after_paint, result)

    def _after_paint(self, result: SearchResult) -> None:
        if self._model is None and not self._model_loading:
            self._preload()
        if self._position_to_restore is not None and result is self.result and not self._facets_to_tick:
            self.query_one(ResultsTable).go_to(self._position_to_restore)
            self._position_to_restore = None
        self.post_message(self.ResultsShown(result))
        if result is self.result:
            self._count(result)

    @work(thread=True, exclusive=True, group="facets")
    def _count(self, result: SearchResult) -> None:
        """Facet counts, and the case titles the very first screen was drawn without."""
        worker = get_current_worker()
        app = medpix(self)
        store = app.store
        if not self._titles_loaded:
            with app.store_lock:
                if not self._titles_loaded:
                    self._titles, self._titles_loaded = case_titles(store), True
            self.app.call_from_thread(self._show_titles)
            if app.first_page_dir is not None and app.first_page is None and result.request == SearchRequest():
                write_first_page(app.first_page_dir, app.bundle, result, self._titles)
        with app.store_lock:
            if worker.is_cancelled:
                return
            universe = self._universe or count_facets(store, run_search(store, SearchRequest()))
            counts = universe if not (result.base or result.request.facets) else count_facets(store, result)
        if not worker.is_cancelled:  # queued, so counts reach the lists in order even while they mount
            self.app.call_from_thread(self.call_later, self._show_counts, universe, counts)

    async def _show_counts(self, universe: dict[str, collections.Counter],
                           counts: dict[str, collections.Counter]) -> None:
        if not alive(self):
            return
        panel = self.query_one(FacetPanel)
        if self._universe is None:
            self._universe = universe
            mounting = panel.set_values(universe)
            if mounting is not None:
                await mounting
            medpix(self).settle_memory()
            if self._facets_to_tick:
                ticks, self._facets_to_tick = self._facets_to_tick, {}
                panel.select(ticks)
                if not panel.selections and self._position_to_restore and self.result is not None:
                    self.query_one(ResultsTable).go_to(self._position_to_restore)  # no tick came back
                    self._position_to_restore = None
        panel.update_counts(counts)

    def _failed(self, message: str) -> None:
        """A query error empties the screen: no rows or counts of an earlier query stay to be saved or read."""
        if not alive(self):
            return
        self.result = None
        medpix(self).result = None
        self._page_shown = False
        table = self.query_one(ResultsTable)
        table.show([], self._titles)
        table.display = False
        empty = self.query_one("#empty", Static)
        empty.update(f"{message}\nFix the query above, or press ctrl+r to reset.")
        empty.display = True
        empty.add_class("-error")
        if self._universe is not None:
            self.query_one(FacetPanel).update_counts({})
        self._status(f"Query error: {message}", error=True)
        self.notify(message, title="Query", severity="error", timeout=4)

    def _totals(self) -> tuple[int, int] | None:
        counts = medpix(self).bundle.manifest.get("counts", {})
        images, cases = counts.get("Image_Descriptions"), counts.get("Clinical_Reports")
        return (images, cases) if isinstance(images, int) and isinstance(cases, int) else None

    def _status(self, text: str, error: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(Text(text, style="bold red" if error else ""))

    # -- actions -------------------------------------------------------------------
    def _opening(self) -> bool:
        """Whether the kept first page is all there is yet (then say so): actions need the whole result."""
        if self._page_shown:
            self.notify("The store is still opening: try again in a moment", severity="warning", timeout=2)
            return True
        return False

    def action_focus_search(self) -> None:
        focus_now(self.query_one("#keywords", Input))

    @on(Input.Submitted, "#keywords")
    def action_focus_results(self) -> None:
        self.query_one(ResultsTable).focus()

    def action_toggle_facets(self) -> None:
        panel = self.query_one(FacetPanel)
        panel.display = self._facets_chosen = not panel.display
        if panel.display:
            panel.focus()

    def action_reset(self) -> None:
        self._within, self._within_label = (), ""
        self.query_one("#keywords", Input).value = ""
        self.query_one(FieldQuery).clear()
        self.query_one(FacetPanel).clear()
        self._schedule()

    @on(DataTable.RowSelected, "#results")
    def action_open_case(self) -> None:
        """Open the case of the highlighted image, with the results to step through."""
        from .case import CaseScreen

        if self.app.screen is not self or not alive(self):
            return  # a key that arrived as another screen opened
        table = self.query_one(ResultsTable)
        if self._opening():
            return
        if self.result is None or table.current_name is None:
            self.notify("No image selected", severity="warning")
            return
        self.app.push_screen(CaseScreen(table.names, table.cursor_row,
                                        highlight=highlight_pattern(self.result.keywords), follow=self._follow))

    def _follow(self, name: str) -> None:
        """The case screen moved to ``name``: the results cursor goes there too."""
        if alive(self) and self.result is not None:
            self.query_one(ResultsTable).go_to(name)

    def action_copy(self) -> None:
        """Copy the highlighted image's id (OSC 52)."""
        name = self.query_one(ResultsTable).current_name
        if name is None:
            self.notify("No image selected", severity="warning")
        else:
            copy_id(self, name)

    def action_similar(self) -> None:
        """Show the images the model finds most alike to the highlighted one."""
        name = self.query_one(ResultsTable).current_name
        if name is None:
            self.notify("Highlight an image first", severity="warning")
        elif self._model_available():
            self._ask_model("similar", name)

    def action_meaning(self) -> None:
        """Rank images by the model's embedding of the search text (not by its words)."""
        text = self.query_one("#keywords", Input).value.strip()
        if not text:
            self.notify("Type what to look for in the search box first", severity="warning")
        elif self._model_available():
            self._ask_model("meaning", text)

    def _model_available(self) -> bool:
        if not medpix(self).has_model:
            self.notify("No model in this bundle: similar-image and meaning search are unavailable", severity="warning")
            return False
        if self._model_error:
            self.notify(self._model_error, title="Model", severity="error")
            return False
        return True

    def _ask_model(self, kind: str, query: str) -> None:
        """Answer now when the model is loaded; else say so at once, load it, and answer when it is."""
        if self._model is not None:
            self._answer(kind, query)
            return
        self._model_wanted = (kind, query)
        self._model_started = time.monotonic()
        self._model_progress()
        if self._model_ticker is None:
            self._model_ticker = self.set_interval(0.5, self._model_progress)
        self._load_model()

    def _model_progress(self) -> None:
        if self._model_wanted is None or not alive(self):
            return
        seconds = time.monotonic() - self._model_started
        what = "similar images" if self._model_wanted[0] == "similar" else "the meaning search"
        self._status(f"Loading the model for {what}… {seconds:.0f} s (once, then answers take under a second)")

    def _preload(self) -> None:
        """Start loading the model behind the first results, so the first model key finds it ready."""
        app = medpix(self)
        if app.preload_model and app.has_model and self._model is None:
            self._load_model()

    @work(thread=True, group="model-load", exit_on_error=False)
    def _load_model(self) -> None:
        """Load the model's parts (slow, once) outside the store lock; answer a waiting request after."""
        if self._model is not None or not self._model_lock.acquire(blocking=False):
            return  # loaded, or loading in another worker (which answers the waiting request)
        self._model_loading = True
        try:
            from ...model.service import BundleModel

            model = BundleModel(medpix(self).bundle)
            _ = model.index, model.text_tower
            with medpix(self).store_lock:
                _ = model.docs
            model.text_tower.encode(["warm up"])  # the first encoding initialises the tower's kernels
        except MedpixError as exc:
            error = str(exc)
        except ImportError as exc:
            error = f"model support is not installed ({exc.name})"
        else:
            error = ""
            self._model = model
        finally:
            self._model_loading = False
            self._model_lock.release()
        if alive(self):
            self.app.call_from_thread(self._model_loaded, error)

    def _model_loaded(self, error: str) -> None:
        if self._model_ticker is not None:
            self._model_ticker.stop()
            self._model_ticker = None
        wanted, self._model_wanted = self._model_wanted, None
        if error:
            self._model_error = error
            if wanted is not None:
                self.notify(error, title="Model", severity="error")
                if self.result is not None:
                    self._status(_summary(len(self.result.images), self.result.case_count, self.result.ranked,
                                          self.result.request, self._totals()))
            return
        if wanted is not None:
            self._answer(*wanted)

    @work(thread=True, exclusive=True, group="model")
    def _answer(self, kind: str, query: str) -> None:
        """The model's answer (fast once loaded), under the store lock."""
        model = self._model
        try:
            with medpix(self).store_lock:
                answer = model.similar(query, k=MODEL_K) if kind == "similar" else model.search(query, k=MODEL_K)
        except MedpixError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        names = tuple(row["image"] for row in answer["images"])
        label = f"similar to {query}" if kind == "similar" else f"meaning of \"{query}\""
        if answer.get("note") and not get_current_worker().is_cancelled:
            self.app.call_from_thread(self.notify, answer["note"], title="Meaning", severity="warning")
        if not get_current_worker().is_cancelled and alive(self):
            self.app.call_from_thread(self._show_within, names, label, kind == "meaning")

    def _show_within(self, names: tuple[str, ...], label: str, clear_keywords: bool) -> None:
        if not alive(self):
            return
        self._within, self._within_label = names, label
        if clear_keywords:
            self.query_one("#keywords", Input).value = ""
        self._search()
        self.query_one(ResultsTable).focus()

    @work(exclusive=True, group="save")
    async def action_save(self) -> None:
        """Save the result set as documents, or copy its images into a folder."""
        result = self.result
        if self._opening():
            return
        if result is None or not result.images:
            self.notify("Nothing to save: the result is empty", severity="warning")
            return
        options = _save_options(medpix(self), result)
        await save_interactively(medpix(self), f"Save {len(result.images)} results", options)


def _summary(images: int, cases: int, ranked: bool, request: SearchRequest,
             totals: tuple[int, int] | None = None) -> str:
    """The status line of a result: its size, of the bundle's when it is a part, then how it is ordered."""
    how = "ranked" if ranked else "in id order"
    hint = keyword_hint(request.keywords)
    hint = f" · {hint}" if hint else ""
    of = f" (of {totals[0]} · {totals[1]})" if totals and (images, cases) != totals else ""
    return f"{counted(images, 'image')} · {counted(cases, 'case')}{of} · {how} · {request.describe()}{hint}"


def _save_options(app: MedpixApp, result: SearchResult) -> list[SaveOption]:
    store, bundle = app.store, app.bundle
    collection = result.request.collection

    def write_docs(fmt: str, path: Path, force: bool) -> Path:
        """The result's documents of the queried collection, in result order, with the manifest of their query."""
        from ...export import save_search_results

        return save_search_results(store, result, path, fmt, bundle=bundle, force=force).files[0]

    def images_writer(modality: str | None) -> Writer:
        def write(path: Path, force: bool) -> list[Path]:
            from ...export import Selection, export

            flt = result.selection_filter()
            if modality:
                flt = {"$and": [flt, {"Type": modality}]}
            selection = Selection.from_query(store, IMAGES, flt)
            if not selection.images:
                raise InputError(f"no {modality} images in these results")
            return export(store, path, "imagefolder", selection=selection, label="modality",
                          bundle=bundle, force=force)  # bundle: its digest goes into the export manifest
        return write

    def write_export(fmt: str, path: Path, force: bool) -> list[Path]:
        from ...export import Selection, export

        selection = Selection.from_query(store, IMAGES, result.selection_filter())
        return export(store, path, fmt, selection=selection, bundle=bundle, force=force)

    stem = "medpix-" + {IMAGES: "images", CASES: "cases", "Image_Reports": "reports"}[collection]
    return [
        *document_options(f"{collection} documents", stem, write_docs),
        SaveOption("All images, copied to a folder", "medpix-images", images_writer(None)),
        SaveOption("CT images only, copied to a folder", "medpix-images-ct", images_writer("CT")),
        SaveOption("MR images only, copied to a folder", "medpix-images-mr", images_writer("MR")),
        *dataset_options("Results", stem, write_export, skip=("imagefolder",)),
    ]

