"""The key footer every screen shows, compact on narrow terminals."""

from __future__ import annotations

from textual import events
from textual.widgets import Footer

#: Below this many columns the footer drops its padding, so every key still shows at 80.
COMPACT_BELOW = 100


class KeyFooter(Footer):
    """Textual's footer, switching to its compact layout below :data:`COMPACT_BELOW` columns."""

    def on_resize(self, event: events.Resize) -> None:
        self.compact = event.size.width < COMPACT_BELOW
