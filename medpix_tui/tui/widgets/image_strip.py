"""Every image of a case as a row of tabs: click one, or focus the row and use the arrows."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.containers import Container
from textual.content import Content
from textual.message import Message
from textual.widgets import Tab, Tabs


class ImageStrip(Container):
    """Tabs named after the images of one case, CT first then MR (the case's own order)."""

    DEFAULT_CSS = """
    ImageStrip { height: 2; }
    ImageStrip Tabs { height: 2; }
    ImageStrip Tabs #tabs-list { min-height: 1; }
    ImageStrip Tab { padding: 0 1; }
    """

    class Chosen(Message):
        """The user picked an image of the case."""

        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._names: list[str] = []

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def set_images(self, docs: list[dict[str, Any]], active: str) -> None:
        """Show a case's images with ``active`` selected; rebuilt only when the case changes."""
        names = [d["image"] for d in docs]
        if names == self._names and self.query(Tabs):
            self.query_one(Tabs).active = active
            return
        had_focus = any(t.has_focus for t in self.query(Tabs))
        self.remove_children()
        self._names = names
        tabs = Tabs(*(Tab(_label(i, d), id=d["image"]) for i, d in enumerate(docs)),
                    active=active if active in names else None)
        self.mount(tabs)
        if had_focus:
            tabs.focus()

    @on(Tabs.TabActivated)
    def _activated(self, event: Tabs.TabActivated) -> None:
        event.stop()
        if event.tab.id:
            self.post_message(self.Chosen(event.tab.id))


def _label(index: int, doc: dict[str, Any]) -> Content:
    plane = ((doc.get("Description") or {}).get("Plane") or "").split(" ")[0]
    return Content(f"{index + 1} {doc.get('Type', '')} {plane}".strip())
