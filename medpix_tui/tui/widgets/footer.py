"""The key footer every screen shows: compact on narrow terminals, and never wider than the screen.

Keys are listed as Textual lists them (the focused widget's, the screen's, then the app's).
When they do not fit beside the palette key, the least needed go first: the other modes'
keys, then help, then the screen's keys from the last; Quit always stays. Every key is
still in the help (F1) and the command palette (ctrl+p).

Each recompose (the bindings change at every focus change and every screen switch) drops
the removed keys' bindings to the footer's ``compact`` (see :mod:`..watchers`): the results
screen's footer lives as long as the app and otherwise kept every key it ever showed.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from ..watchers import forget_watchers

#: Below this many columns the footer drops its padding.
COMPACT_BELOW = 100
#: Actions dropped first when the keys do not fit, in this order (then the screen's, from the last).
DROP_FIRST = ("switch_mode", "help")
KEEP = ("quit",)


class KeyFooter(Footer):
    """Textual's footer, compact below :data:`COMPACT_BELOW` columns, cut to fit by priority."""

    _tries = 0

    def on_resize(self, event: events.Resize) -> None:
        """Fit the keys again from all of them: those cut at a narrow width come back when it widens."""
        self.compact = event.size.width < COMPACT_BELOW
        for key in self.query(FooterKey):
            key.display = True
        self._tries = 0
        self.call_after_refresh(self._fit)

    async def recompose(self) -> None:
        await super().recompose()
        forget_watchers(self)  # the old keys are removed (closing) by now
        self.call_after_refresh(self._fit)

    def _fit(self) -> None:
        if not self.is_attached:
            return
        keys = [k for k in self.query(FooterKey) if k.display]
        palette = [k for k in keys if k.has_class("-command-palette")]
        keys = [k for k in keys if not k.has_class("-command-palette")]
        if not keys:
            return
        limit = (palette[0].region.x if palette else self.region.right) - self.region.x
        if not all(k.region.width for k in keys) or (palette and not palette[0].region.width):
            if self._tries < 5:  # not laid out yet
                self._tries += 1
                self.call_after_refresh(self._fit)
            return
        self._tries = 0
        total: float = max(k.region.right for k in keys) - self.region.x
        if total <= limit:
            return
        gap = (total - sum(k.region.width for k in keys)) / max(1, len(keys) - 1)

        def rank(index: int) -> tuple[int, int]:
            action = keys[index].action.split("(")[0]
            if action in DROP_FIRST:
                return (DROP_FIRST.index(action), -index)
            return (len(DROP_FIRST), -index)

        for index in sorted(range(len(keys)), key=rank):
            if total <= limit:
                break
            if keys[index].action.split("(")[0] in KEEP:
                continue
            total -= keys[index].region.width + gap
            keys[index].display = False
