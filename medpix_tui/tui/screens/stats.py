"""Statistics: distributions of modality, location category, plane, age and sex as terminal plots.

Counts come from :meth:`Store.facet_counts` in a worker, over the whole bundle or over the
search screen's current results (``r`` switches).
"""

from __future__ import annotations

import collections
import statistics
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.screen import Screen
from textual.widgets import Header, Static
from textual.worker import get_current_worker
from textual_plotext import PlotextPlot

from ...store import IMAGES
from ..app import medpix
from ..searching import AGE_RANGES, SearchResult, age_range
from ..widgets.footer import KeyFooter

PLOTS: tuple[tuple[str, str, str], ...] = (
    ("modality", "Modality", "Type"),
    ("category", "Location category", "Location Category"),
    ("plane", "Plane", "Description.Plane"),
    ("age", "Age (years)", "Description.Age"),
    ("sex", "Sex", "Description.Sex"),
)
#: Most bars a plot shows; the rest are summed as "other".
TOP = 6
SHORT = {"Reproductive and Urinary System": "Repro/Urinary", "Spine and Muscles": "Spine/Musc",
         "Multiple or Montage": "Montage", "3D Reconstruction": "3D", "Other View (see caption)": "Other",
         "NOS - Not specified": "NOS"}


class StatsScreen(Screen[None]):
    """Five bar charts and a summary, for the bundle or the current results."""

    CSS_PATH = "stats.tcss"
    BINDINGS = [
        Binding("r", "toggle_scope", "Bundle/results",
                tooltip="Switch between the whole bundle and the current results"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.scope_results = False
        self._drawn_for: object = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="stats-scope", markup=False)
        with Grid(id="stats-grid"):
            for key, title, _ in PLOTS:
                plot = PlotextPlot(id=f"plot-{key}")
                plot.border_title = title
                yield plot
            yield Static(id="stats-summary", markup=False)
        yield KeyFooter()

    def on_screen_resume(self) -> None:
        self._refresh()

    def action_toggle_scope(self) -> None:
        result = medpix(self).result
        if not self.scope_results and (result is None or not result.images):
            self.notify("No search results yet: showing the whole bundle", severity="warning")
            return
        self.scope_results = not self.scope_results
        self._refresh()

    def _refresh(self) -> None:
        result = medpix(self).result if self.scope_results else None
        key = (self.scope_results, tuple(result.names) if result is not None else None)
        if key == self._drawn_for:
            return
        self._drawn_for = key
        self._count(result)

    @work(thread=True, exclusive=True, group="stats")
    def _count(self, result: SearchResult | None) -> None:
        """Counts over ``result`` (None: the whole bundle); given the result, whose repr is one line,
        as Textual's @work reprs a worker's arguments on the event loop."""
        flt = result.selection_filter() if result is not None else None
        store = medpix(self).store
        with medpix(self).store_lock:
            counts = store.facet_counts(IMAGES, flt, [path for _, _, path in PLOTS] + ["U_id"])
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._draw, counts, result is not None)

    def _draw(self, counts: dict[str, collections.Counter], results: bool) -> None:
        total = sum(counts["Type"].values())
        scope = f"Current results ({total} images)" if results else f"Whole bundle ({total} images)"
        other = "the whole bundle" if results else "the current results"
        self.query_one("#stats-scope", Static).update(Text.assemble((scope, "bold"), f"  ·  press r for {other}"))
        for key, _, path in PLOTS:
            labels, values = _bars(key, counts[path])
            plot = self.query_one(f"#plot-{key}", PlotextPlot)
            plt = plot.plt
            plt.clear_data()
            plt.clear_figure()
            if values:
                horizontal = key in ("category", "plane")
                plt.bar(labels, values, orientation="horizontal" if horizontal else "vertical", width=0.5, marker="hd")
                # explicit ticks: plotext's own choice depends on what it drew before, and uses decimals
                positions = [float(p) for p in range(1, len(labels) + 1)]
                step = 2 if len(labels) > 5 and not horizontal else 1
                (plt.yticks if horizontal else plt.xticks)(positions[::step], labels[::step])
                (plt.xticks if horizontal else plt.yticks)(_count_ticks(max(values)))
            plot.refresh()
        self.query_one("#stats-summary", Static).update(_summary(counts))


def _bars(key: str, counter: collections.Counter) -> tuple[list[str], list[int]]:
    if key == "age":
        ranges: collections.Counter = collections.Counter()
        for age, n in counter.items():
            ranges[age_range(age) or "?"] += n
        labels = [r for r in [*AGE_RANGES, "?"] if ranges[r]]
        return [r.split("-")[0] for r in labels], [ranges[r] for r in labels]
    items = [(str(v), n) for v, n in counter.most_common() if v not in (None, "")]
    if len(items) > TOP:
        items = items[: TOP - 1] + [("other", sum(n for _, n in items[TOP - 1:]))]
    if key in ("category", "plane"):
        items.reverse()  # plotext draws horizontal bars bottom-up
    return [SHORT.get(v, v) for v, _ in items], [n for _, n in items]


def _count_ticks(top: int) -> list[float]:
    """About four round ticks from zero to ``top``."""
    step = max(1, top // 3)
    magnitude = 10 ** (len(str(step)) - 1)
    step = max(1, round(step / magnitude) * magnitude)
    return [float(t) for t in range(0, top + 1, step)]


def _summary(counts: dict[str, Any]) -> Text:
    ages = [int(a) for a, n in counts["Description.Age"].items() for _ in range(n) if str(a).isdigit()]
    images = sum(counts["Type"].values())
    lines = [
        ("Images", str(images)),
        ("Cases", str(len(counts["U_id"]))),
        ("CT/MR", f"{counts['Type'].get('CT', 0)}/{counts['Type'].get('MR', 0)}"),
        ("Median age", f"{statistics.median(ages):g} y" if ages else "–"),
        ("Age range", f"{min(ages)}–{max(ages)} y" if ages else "–"),
        ("Female/male", f"{counts['Description.Sex'].get('female', 0)}/{counts['Description.Sex'].get('male', 0)}"),
    ]
    return Text("\n").join(Text.assemble((f"{k:<12}", "bold"), v) for k, v in lines)
