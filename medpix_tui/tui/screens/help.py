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
        "Type **keywords** to rank images by caption, diagnosis, findings and topic text: every "
        "word must occur (`ring enhancing lesion`), `\"quoted words\"` side by side, `glioma OR "
        "astrocytoma` either, `-metastasis` (or `NOT metastasis`) leaves out, `enhanc*` any word starting so. The "
        "*Match* column shows where the words hit. "
        "The **field query** is the MedPix 2.0 authors' query: choose a collection, a field "
        "(e.g. `Description.Caption`, `Case.Title`) and a regex, matched case-insensitively "
        "(or type `Description.Caption=hemorrhage` in the field box); Enter keeps the pair, and "
        "kept pairs are ANDed. Tick **facets** on the left to narrow the results; their counts "
        "follow the query. Enter on a result opens its case.\n\n"
        "In the results: `o` sorts by the next column, `O` reverses (or click a header); "
        "`Home`/`End` go to the first and last image (the scrollbar spans the whole result); `c` "
        "copies the image id; `q` quits."
    ),
    "CaseScreen": (
        "The image with its legend on the left, the case (history to discussion) and its topic "
        "on the right; scroll them with the arrows or PgUp/PgDn. The strip under the image "
        "lists every image of the case. Searched words are underlined; `/` finds text in the "
        "pane shown (Enter: next match, Esc: close)."
    ),
    "ImageScreen": (
        "The image on the whole screen. The arrows step through the images of the case; "
        "`1`-`4` choose a window (full, soft tissue, bright, dark), `+`/`-` change the contrast, "
        "`z`/`x` zoom in and out, `0` resets."
    ),
    "SqlScreen": (
        "DuckDB SQL over the bundle's Parquet tables `images`, `cases` and `image_reports` "
        "(pick a column in the sidebar to insert it). Enter on a result cell shows its value whole; EXPLAIN shows "
        "its plan line by line. Past queries are listed under History. SQL here only "
        "reads: statements that create, drop, alter or write (CREATE, DROP, INSERT, CHECKPOINT...) are refused. "
        "In the editor `tab` indents; `esc` leaves it for the results (when nothing runs) and `ctrl+e` comes back."
    ),
    "StatsScreen": (
        "Distributions of modality, location category, plane, age and sex, "
        "for the whole bundle or the current results."
    ),
    "QualityScreen": (
        "The bundle's quality report, as `medpix-tui report quality` writes it: image pairs that sit in two "
        "splits (**leakage**), near-duplicates, label conflicts by kind, every raw label value with its clean "
        "one, and the classes per split. It takes some seconds to compute (every image is decoded); the other "
        "screens work meanwhile, and F5 again shows it at once. Enter on a row opens its case (`n`: the pair's "
        "other image)."
    ),
    "QuizScreen": (
        "Guess the diagnosis from the images and the history (`ctrl+l`: with findings, with the exam too). "
        "Titles, diagnosis, differential, discussion, topic and captions stay hidden until you answer "
        "(type it, Enter) or reveal (`ctrl+r`, or Enter on nothing). Answers count when they share most "
        "words with the diagnosis or its synonyms (titles, topic keywords); the differential earns half. "
        "Cards you miss come back sooner. `ctrl+o` picks a deck: the current search results, or a category, "
        "ACR code, modality, location or split. Progress is kept per deck."
    ),
    "SimilarCasesScreen": (
        "Cases whose history and findings read most like the query (cosine of MiniLM sentence "
        "embeddings), best first. Enter opens one; `n`/`p` there walk the list. F7 on a case lists "
        "the cases like it."
    ),
}


#: Screen names a reader spells otherwise.
TITLES = {"Sql": "SQL"}


class HelpScreen(ModalScreen[None]):
    """What the screen below does, and its keys, then the keys that work everywhere."""

    CSS_PATH = "help.tcss"
    BINDINGS = [Binding("escape,f1,question_mark", "close", "Close")]

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
        title = name.removesuffix("Screen")
        parts = [f"## {TITLES.get(title, title)}", GUIDES.get(name, "")]
        if here:
            parts += ["### Keys here", "\n".join(dict.fromkeys(here))]
        everywhere += ["- `ctrl+p`  Command palette: every action by name",
                       "- `tab`  Next field or pane (the mouse works too)"]
        parts += ["### Everywhere", "\n".join(dict.fromkeys(everywhere))]
        return "\n\n".join(parts)

    def action_close(self) -> None:
        self.dismiss()
