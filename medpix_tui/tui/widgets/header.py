"""Textual's header, safe on a screen that is leaving.

Textual's ``Header`` watches the screen's title and redraws it in a callback that runs
later; when Escape dismissed the screen in between, the callback found no title widget and
raised ``NoMatches: HeaderTitle`` (issue 17's second crash). This header's callback checks
first. When it leaves, it drops the watchers it left on the app (see :mod:`..watchers`):
otherwise every dismissed screen's header stayed alive with the app.
"""

from __future__ import annotations

from textual import events
from textual.css.query import NoMatches
from textual.dom import NoScreen
from textual.widget import Widget
from textual.widgets import Header
from textual.widgets._header import HeaderTitle

from ..app import alive
from ..watchers import forget_watchers


class SafeHeader(Header):
    """A header whose title follows the screen's only while the screen is still there."""

    def _on_mount(self, event: events.Mount) -> None:
        event.prevent_default()  # instead of Header's own, which redraws unguarded
        Widget._on_mount(self, event)

        async def set_title() -> None:
            if not alive(self):
                return
            try:
                self.query_one(HeaderTitle).update(self.format_title())
            except (NoScreen, NoMatches):
                pass

        self.watch(self.app, "title", set_title)
        self.watch(self.app, "sub_title", set_title)
        self.watch(self.screen, "title", set_title)
        self.watch(self.screen, "sub_title", set_title)

    def on_unmount(self) -> None:
        forget_watchers(self.app, self)  # the screen's own watchers go with the screen
