"""A scrollable page of headed sections, laid out like a MedPix case page.

Text from the dataset is shown as plain text (never parsed as markup), paragraphs and
bullets as written; sections a case does not have are hidden rather than shown empty.
The words of the keyword search that led here are marked, and :meth:`DocPane.find`
marks and walks the matches of text typed after ``/``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from ...render import shown_value

HIT_STYLE = "bold underline"
FOUND_STYLE = "reverse"


class DocPane(VerticalScroll, can_focus=True):
    """Headings and bodies for a fixed list of sections (a section's field is its heading)."""

    DEFAULT_CSS = """
    DocPane { padding: 0 1; }
    DocPane > .doc-title { text-style: bold; color: $text; margin-bottom: 1; }
    DocPane > .heading { text-style: bold underline; color: $accent; width: 100%; }
    DocPane > .body { margin-bottom: 1; }
    DocPane > .-none { display: none; }
    """

    def __init__(self, sections: tuple[str, ...], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.sections = sections
        self._texts: dict[str, str] = {}
        self._title = ""
        self.highlight: re.Pattern[str] | None = None
        self._find: re.Pattern[str] | None = None
        self._found: list[Static] = []
        self._at = -1

    def compose(self) -> ComposeResult:
        yield Static(classes="doc-title -none", markup=False)
        for field in self.sections:
            yield Static(Content(field), classes="heading -none", name=field)
            yield Static(classes="body -none", markup=False, name=field)

    def show(self, title: str, doc: Mapping[str, Any], highlight: str | None = None) -> None:
        """Fill the sections from ``doc``, its ``highlight`` matches marked; scroll back to the top."""
        self._title = title
        self._texts = {field: _text(field, doc.get(field)) for field in self.sections}
        self.highlight = re.compile(highlight, re.IGNORECASE) if highlight else None
        self._draw()
        self.scroll_home(animate=False)

    def _draw(self) -> None:
        title_widget = self.query_one(".doc-title", Static)
        title_widget.update(self._marked(self._title))
        title_widget.set_class(not self._title, "-none")
        self._found = []
        for widget in self.query(".heading, .body").results(Static):
            text = self._texts.get(widget.name or "", "")
            if widget.has_class("body"):
                widget.update(self._marked(text))
                if self._find is not None and self._find.search(text):
                    self._found.append(widget)
            widget.set_class(not text, "-none")

    def _marked(self, text: str) -> Content:
        content = Content(text)
        if self.highlight is not None:
            content = content.highlight_regex(self.highlight, style=HIT_STYLE)
        if self._find is not None:
            content = content.highlight_regex(self._find, style=FOUND_STYLE)
        return content

    @property
    def text(self) -> str:
        """Everything the pane shows, as plain text."""
        return "\n".join(v for v in (self._title, *self._texts.values()) if v)

    def find(self, text: str) -> int:
        """Mark every match of ``text`` (case-insensitive) and scroll to the first; returns how many."""
        self._find = re.compile(re.escape(text), re.IGNORECASE) if text.strip() else None
        self._draw()
        self._at = -1
        if self._find is None:
            return 0
        count = sum(len(self._find.findall(t)) for t in self._texts.values())
        self.find_next()
        return count

    def find_next(self) -> None:
        """Scroll to the next section holding a match (wrapping around)."""
        if not self._found:
            return
        self._at = (self._at + 1) % len(self._found)
        self.scroll_to_widget(self._found[self._at], animate=False, top=True)


def _text(key: str, value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(f"• {v}" for v in value)
    return shown_value(key, value)
