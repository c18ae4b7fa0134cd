"""The quality report (F5): leakage pairs, near-duplicates, label conflicts, vocabulary, splits.

The report decodes every image (pixel digests, perceptual hashes): about 10 s on 2 cores.
It runs in a thread worker while the screen says how long it has been working; the event
loop keeps serving keys, and the store lock is held only while the report reads documents
(:mod:`..locked`). The mode keeps its report: F5 again shows it at once. Enter on a row that
names images opens their case (a pair's two images: ``n`` steps to the second).
"""

from __future__ import annotations

import time
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, LoadingIndicator, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from ...errors import MedpixError
from ...progress import Stopped, stoppable
from ...store import IMAGES
from ..app import alive, medpix
from ..locked import locked
from ..widgets.footer import KeyFooter
from ..widgets.header import SafeHeader
from ..widgets.plain_table import PlainTable

#: The tables, in tab order: pane id -> tab title.
SECTIONS = {"leakage": "Leakage", "near": "Near-duplicates", "conflicts": "Conflicts", "vocabulary": "Vocabulary",
            "splits": "Splits"}


def _cosine(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


class QualityScreen(Screen[None]):
    """The bundle's data-quality and leakage report, section by section."""

    CSS_PATH = "quality.tcss"
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Back to the search"),
        Binding("ctrl+o", "open_case", "Open case", tooltip="Read the case of the highlighted row (Enter too)"),
        Binding("right_square_bracket", "section(1)", "Section", key_display="]", tooltip="Next section of the report"),
        Binding("left_square_bracket", "section(-1)", "Prev section", key_display="[", show=False,
                tooltip="Previous section of the report"),
        Binding("ctrl+r", "recompute", "Recompute", show=False, tooltip="Compute the report again"),
    ]

    def __init__(self) -> None:
        super().__init__()
        #: The report, once computed (the ``--json`` form of ``report quality``).
        self.report: dict[str, Any] | None = None
        #: Per table, row key -> the images that row names (what Enter opens).
        self.targets: dict[str, dict[str, list[str]]] = {name: {} for name in SECTIONS}
        self._started = 0.0
        self._ticker: Timer | None = None

    def compose(self) -> ComposeResult:
        yield SafeHeader()
        yield Static("", id="quality-summary", markup=False)
        yield LoadingIndicator(id="quality-loading")
        with TabbedContent(id="quality-tabs"):
            for name, title in SECTIONS.items():
                with TabPane(title, id=f"tab-{name}"):
                    yield PlainTable(id=f"table-{name}", cursor_type="row", zebra_stripes=True)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.title = "Quality report"
        self.action_recompute()

    # -- computing -----------------------------------------------------------------
    def action_recompute(self) -> None:
        if self._ticker is not None:
            return  # already working
        self._started = time.monotonic()
        self.query_one("#quality-loading").display = True
        self.query_one("#quality-tabs").display = False
        self._tick()
        self._ticker = self.set_interval(0.5, self._tick)
        self._compute()

    def _tick(self) -> None:
        seconds = time.monotonic() - self._started
        self.query_one("#quality-summary", Static).update(
            f"Working: decoding every image for pixel digests and perceptual hashes, then pairing them "
            f"({seconds:.0f} s so far; about 10 s on two idle cores). The other screens keep working meanwhile.")

    @work(thread=True, exclusive=True, group="quality")
    def _compute(self) -> None:
        from ...quality import quality_report

        app = medpix(self)
        worker = get_current_worker()
        try:
            bundle = locked(app.bundle, app.store_lock)
            # a quit (or Esc) cancels the worker: the hashing stops at its next image, where quitting
            # waited some 8 s on a blank screen for the whole report
            report = quality_report(bundle, progress=stoppable(lambda: worker.is_cancelled))
            with app.store_lock:
                first_image: dict[str, str] = {}
                for doc in app.store.find(IMAGES, projection=["image", "U_id"]):
                    first_image.setdefault(doc["U_id"], doc["image"])
        except Stopped:
            return
        except (MedpixError, OSError) as exc:
            if not worker.is_cancelled:
                self.app.call_from_thread(self._failed, str(exc))
            return
        if not worker.is_cancelled:
            self.app.call_from_thread(self._fill, report, first_image)

    def _stop_ticking(self) -> None:
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None
        self.query_one("#quality-loading").display = False

    def _failed(self, message: str) -> None:
        if not alive(self):
            return
        self._stop_ticking()
        self.query_one("#quality-summary", Static).update(f"The report failed: {message}")
        self.notify(message, title="Quality report", severity="error")

    def _fill(self, report: dict[str, Any], first_image: dict[str, str]) -> None:
        if not alive(self):
            return
        from ...quality import summary_lines

        self._stop_ticking()
        self.report = report
        lines = summary_lines(report)
        # the vocabulary line is long and its tab says it all: the summary keeps the findings
        self.query_one("#quality-summary", Static).update("\n".join(line for line in lines
                                                                    if not line.startswith("vocabulary:")))
        counts = {
            "leakage": len(report["leakage"]["pairs"]),
            "near": len(report["duplicates"]["near"]),
            "conflicts": sum(report["conflict_counts"].values()),
            "vocabulary": sum(len(rows) for rows in report["vocabulary"].values()),
        }
        self._leakage(report)
        self._near(report)
        self._conflicts(report, first_image)
        self._vocabulary(report)
        self._splits(report)
        tabs = self.query_one(TabbedContent)
        for name, title in SECTIONS.items():
            if name in counts:
                tabs.get_tab(f"tab-{name}").label = f"{title} ({counts[name]})"
        tabs.display = True
        self.query_one(f"#table-{tabs.active.removeprefix('tab-')}", DataTable).focus()

    def _table(self, name: str, *columns: str) -> DataTable:
        table = self.query_one(f"#table-{name}", DataTable)
        table.clear(columns=True)
        table.add_columns(*columns)
        self.targets[name] = {}
        return table

    def _leakage(self, report: dict[str, Any]) -> None:
        table = self._table("leakage", "image a", "image b", "splits", "hash bits", "cosine")
        for i, pair in enumerate(report["leakage"]["pairs"]):
            key = f"leak-{i}"
            table.add_row(pair["a"], pair["b"], " / ".join(map(str, pair["splits"])), str(pair["phash_distance"]),
                          _cosine(pair["cosine"]), key=key)
            self.targets["leakage"][key] = [pair["a"], pair["b"]]

    def _near(self, report: dict[str, Any]) -> None:
        table = self._table("near", "image a", "image b", "same case", "splits", "hash bits", "cosine")
        for i, pair in enumerate(report["duplicates"]["near"]):
            key = f"near-{i}"
            table.add_row(pair["a"], pair["b"], "yes" if pair["same_case"] else "no",
                          " / ".join(map(str, pair["splits"])), str(pair["phash_distance"]), _cosine(pair["cosine"]),
                          key=key)
            self.targets["near"][key] = [pair["a"], pair["b"]]

    def _conflicts(self, report: dict[str, Any], first_image: dict[str, str]) -> None:
        table = self._table("conflicts", "kind", "image", "case", "split", "detail")
        for kind, rows in report["conflicts"].items():
            for i, row in enumerate(rows):
                key = f"{kind}-{i}"
                table.add_row(kind.replace("_", " "), row["image"] or "", row["case"] or "", str(row["split"]),
                              row["detail"], key=key)
                image = row["image"] or first_image.get(row["case"] or "")
                if image:
                    self.targets["conflicts"][key] = [image]

    def _vocabulary(self, report: dict[str, Any]) -> None:
        table = self._table("vocabulary", "field", "raw value", "count", "clean value")
        for path, rows in report["vocabulary"].items():
            for row in rows:
                table.add_row(path, repr(row["raw"]), str(row["count"]), str(row["clean"]))

    def _splits(self, report: dict[str, Any]) -> None:
        splits = report["splits"]
        names = list(splits["images"])
        table = self._table("splits", "task", "class", *names)
        table.add_row("all", "images", *(str(splits["images"][s]) for s in names))
        table.add_row("all", "cases", *(str(splits["cases"][s]) for s in names))
        for task in ("modality", "location"):
            for label, counts in splits[task].items():
                table.add_row(task, label, *(str(counts[s]) for s in names))

    # -- actions -------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.switch_mode("search")

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self._open(event.data_table)

    def action_section(self, delta: int) -> None:
        """Show the next or previous section (wrapping around), its table focused."""
        tabs = self.query_one(TabbedContent)
        if not tabs.display:
            return
        names = list(SECTIONS)
        name = names[(names.index(tabs.active.removeprefix("tab-")) + delta) % len(names)]
        tabs.active = f"tab-{name}"
        self.query_one(f"#table-{name}", DataTable).focus()

    def action_open_case(self) -> None:
        tabs = self.query_one(TabbedContent)
        if tabs.active:
            self._open(self.query_one(f"#table-{tabs.active.removeprefix('tab-')}", DataTable))

    def _open(self, table: DataTable) -> None:
        """Open the case of the row's images, as the search screen opens a result's."""
        from .case import CaseScreen

        if self.app.screen is not self or not alive(self) or table.row_count == 0:
            return
        name = (table.id or "").removeprefix("table-")
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        names = self.targets.get(name, {}).get(key or "")
        if not names:
            self.notify("This row names no case", severity="warning", timeout=2)
            return
        self.app.push_screen(CaseScreen(names, 0))
