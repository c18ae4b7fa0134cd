"""Facet lists with live counts: tick values to narrow the results.

Values are listed once, in a stable order taken from the whole bundle, so ticking one does
not make the others jump; only their counts change (zero counts are dimmed).
"""

from __future__ import annotations

import collections

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widget import AwaitMount
from textual.widgets import Collapsible, SelectionList, Static

from ...session import FACETS, facet_order

#: Facets shown open at start; the rest are a keystroke away.
OPEN = ("modality", "category")
LABEL_WIDTH = 16


class FacetPanel(VerticalScroll):
    """A collapsible multi-select list per facet."""

    DEFAULT_CSS = """
    FacetPanel { width: 30; height: 1fr; scrollbar-size-vertical: 1; }
    FacetPanel Collapsible { padding: 0; margin: 0; border-top: none; }
    FacetPanel Collapsible > Contents { padding: 0 0 0 1; }
    FacetPanel SelectionList { height: auto; max-height: 9; border: none; padding: 0; }
    FacetPanel #facets-loading { color: $text-muted; padding: 0 1; }
    """

    class Changed(Message):
        """The ticked values changed."""

        def __init__(self, selections: dict[str, frozenset[str]]) -> None:
            super().__init__()
            self.selections = selections

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._order: dict[str, list[str]] = {}
        self._counts: dict[str, collections.Counter] = {}
        #: value -> count currently drawn, per facet (unchanged prompts are not redrawn)
        self._shown: dict[str, dict[str, int]] = {}

    def compose(self) -> ComposeResult:
        yield Static("Counting…", id="facets-loading")

    def set_values(self, universe: dict[str, collections.Counter]) -> AwaitMount | None:
        """Build the lists once, from every value the bundle has and its count.

        They are mounted after the first results are on screen, keeping the first
        paint light.
        """
        if self._order:
            return None
        boxes = []
        for facet in FACETS:
            counts = universe.get(facet.key, collections.Counter())
            order = self._order[facet.key] = facet_order(facet.key, counts)
            self._shown[facet.key] = {v: counts[v] for v in order}
            # added after construction: options given to the constructor come highlighted,
            # and a highlight reads like a tick
            options = SelectionList[str](id=f"facet-{facet.key}")
            options.add_options([(_prompt(v, counts[v]), v) for v in order])
            boxes.append(Collapsible(options, title=facet.title, collapsed=facet.key not in OPEN,
                                     id=f"facet-box-{facet.key}"))
        self._counts = universe
        self.query("#facets-loading").remove()
        return self.mount_all(boxes)

    def update_counts(self, counts: dict[str, collections.Counter]) -> None:
        """Show live counts for the current query (open facets now, closed ones when opened)."""
        self._counts = counts
        for box in self.query(Collapsible):
            if not box.collapsed:
                self._redraw((box.id or "").removeprefix("facet-box-"))

    def _redraw(self, key: str) -> None:
        """Rewrite the prompts of one facet whose count changed."""
        options = self.query_one(f"#facet-{key}", SelectionList)
        current = self._counts.get(key, collections.Counter())
        shown = self._shown.setdefault(key, {})
        for i, value in enumerate(self._order[key]):
            if shown.get(value) != current[value]:
                shown[value] = current[value]
                options.replace_option_prompt_at_index(i, _prompt(value, current[value]))

    @on(Collapsible.Expanded)
    def _opened(self, event: Collapsible.Expanded) -> None:
        key = (event.collapsible.id or "").removeprefix("facet-box-")
        if key in self._order:
            self._redraw(key)

    @property
    def selections(self) -> dict[str, frozenset[str]]:
        """Ticked values per facet key (none before the lists are built)."""
        return {(options.id or "").removeprefix("facet-"): frozenset(options.selected)
                for options in self.query(SelectionList) if options.selected}

    def select(self, selections: dict[str, frozenset[str]]) -> None:
        """Tick these values (those the lists have); Changed messages follow as for clicks."""
        for key, values in selections.items():
            for options in self.query(f"#facet-{key}").results(SelectionList):
                for value in values:
                    if value in self._order.get(key, []):
                        options.select(value)

    def clear(self) -> None:
        """Untick everything (one Changed message follows per list that changed)."""
        for options in self.query(SelectionList):
            options.deselect_all()

    @on(SelectionList.SelectedChanged)
    def _changed(self, event: SelectionList.SelectedChanged) -> None:
        event.stop()
        key = (event.selection_list.id or "").removeprefix("facet-")
        box = self.query_one(f"#facet-box-{key}", Collapsible)
        title = next(f.title for f in FACETS if f.key == key)
        n = len(event.selection_list.selected)
        box.title = f"{title} ({n})" if n else title
        self.post_message(self.Changed(self.selections))


def _prompt(value: str, count: int) -> Text:
    label = value if len(value) <= LABEL_WIDTH else value[: LABEL_WIDTH - 1] + "…"
    return Text.assemble((label.ljust(LABEL_WIDTH), "dim" if not count else ""), (f"{count:>5}", "dim"))
