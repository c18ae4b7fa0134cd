"""A scrollable page of headed sections, laid out like a MedPix case page.

Text from the dataset is shown as plain text (never parsed as markup), paragraphs and
bullets as written; sections a case does not have are hidden rather than shown empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from ...render import shown_value


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

    def compose(self) -> ComposeResult:
        yield Static(classes="doc-title -none", markup=False)
        for field in self.sections:
            yield Static(Content(field), classes="heading -none", name=field)
            yield Static(classes="body -none", markup=False, name=field)

    def show(self, title: str, doc: Mapping[str, Any]) -> None:
        """Fill the sections from ``doc``; scroll back to the top."""
        title_widget = self.query_one(".doc-title", Static)
        title_widget.update(Content(title))
        title_widget.set_class(not title, "-none")
        for widget in self.query(".heading, .body").results(Static):
            value = doc.get(widget.name or "")
            text = _text(widget.name or "", value)
            if widget.has_class("body"):
                widget.update(Content(text))
            widget.set_class(not text, "-none")
        self.scroll_home(animate=False)


def _text(key: str, value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(f"• {v}" for v in value)
    return shown_value(key, value)
