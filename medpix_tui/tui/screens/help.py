"""Help: a short guide to the screen underneath and every key it answers to."""

from __future__ import annotations

from typing import Any

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Markdown

from ..app import declared_here

GUIDES = {
    "SearchScreen": (
        "Type **keywords** to rank images by caption, diagnosis, findings and topic text. "
        "The **field query** is the MedPix 2.0 authors' query: choose a collection, a field "
        "(e.g. `Description.Caption`, `Case.Title`) and a regex, matched case-insensitively; "
        "Enter keeps the pair, and kept pairs are ANDed. Tick **facets** on the left to narrow "
        "the results; their counts follow the query. Enter on a result opens its case."
    ),
    "CaseScreen": (
        "The image with its legend on the left, the case (history to discussion) and its topic "
        "on the right; scroll them with the arrows or PgUp/PgDn. The strip under the image "
        "lists every image of the case."
    ),
    "ImageScreen": "The image on the whole screen. The arrows step through the images of the case.",
    "SqlScreen": (
        "DuckDB SQL over the bundle's Parquet tables `images`, `cases` and `image_reports` "
        "(pick a column in the sidebar to insert it). Past queries are listed under History."
    ),
    "StatsScreen": "Distributions of modality, location category, plane, age and sex, "
                   "for the whole bundle or the current results.",
}


class HelpScreen(ModalScreen[None]):
    """What the screen below does, and its keys, then the keys that work everywhere."""

    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,q,f1,question_mark", "close", "Close")]

    def __init__(self, below: Screen[Any]) -> None:
        super().__init__()
        self.below = below

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box") as box:
            box.border_title = "Help"
            yield Markdown(self._text())

    def _text(self) -> str:
        app = self.app
        here: list[str] = []
        everywhere: list[str] = []
        for active in self.below.active_bindings.values():
            binding = active.binding
            if not binding.description or not declared_here(active.node, binding):
                continue  # inherited keys (focus, scrolling, editing) are the usual ones
            line = f"- `{app.get_key_display(binding)}`  {binding.tooltip or binding.description}"
            (everywhere if isinstance(active.node, App) else here).append(line)
        name = type(self.below).__name__
        parts = [f"## {name.removesuffix('Screen')}", GUIDES.get(name, "")]
        if here:
            parts += ["### Keys here", "\n".join(dict.fromkeys(here))]
        everywhere += ["- `ctrl+p`  Command palette: every action by name",
                       "- `tab`  Next field or pane (the mouse works too)"]
        parts += ["### Everywhere", "\n".join(dict.fromkeys(everywhere))]
        return "\n\n".join(parts)

    def action_close(self) -> None:
        self.dismiss()
