"""One image on the whole screen, to see detail; the arrows step through the case.

Window presets, contrast and zoom work as in a viewer: they stay while stepping.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.widgets import Static

from ..app import GuardedScreen, alive, medpix
from ..widgets.footer import KeyFooter
from ..widgets.image_view import WINDOWS, ZOOMS, ImageView
from .case import image_legend


class ImageScreen(GuardedScreen):
    """A case's images, one at a time, as large as the terminal allows."""

    CSS_PATH = "image.tcss"
    BINDINGS = [
        Binding("escape,f", "close", "Close", tooltip="Back to the case"),
        Binding("right,right_square_bracket,n", "step(1)", "Next image", key_display="→"),
        Binding("left,left_square_bracket,p", "step(-1)", "Prev image", key_display="←", show=False),
        Binding("1", "window('full')", "Full range", show=False, tooltip="Window: every grey value"),
        Binding("2", "window('soft tissue')", "Soft tissue", show=False,
                tooltip="Window: the middle greys, more contrast"),
        Binding("3", "window('bright')", "Bright", show=False, tooltip="Window: the bright end (bone, contrast)"),
        Binding("4", "window('dark')", "Dark", show=False, tooltip="Window: the dark end (air, fluid)"),
        Binding("plus,equals_sign", "contrast(0.8)", "Contrast", key_display="+/-",
                tooltip="More contrast (narrower window)"),
        Binding("minus", "contrast(1.25)", "Contrast-", key_display="-", show=False,
                tooltip="Less contrast (wider window)"),
        Binding("z", "zoom(1)", "Zoom", tooltip="Zoom in toward the centre"),
        Binding("x", "zoom(-1)", "Zoom out", show=False, tooltip="Zoom out"),
        Binding("0", "reset_view", "Reset view", show=False, tooltip="Full window, no zoom"),
    ]

    def __init__(self, images: list[dict[str, Any]], index: int) -> None:
        super().__init__()
        self.images = images
        self.index = index

    def compose(self) -> ComposeResult:
        yield ImageView(medpix(self).image_class, id="full-image")
        yield Static(id="full-legend")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._show()

    def _show(self) -> None:
        if not alive(self):
            return
        doc = self.images[self.index]
        self._legend()
        self.query_one(ImageView).show(medpix(self).bundle.image_path(doc["image"]))
        self.sub_title = self.position

    @property
    def shown(self) -> dict[str, Any]:
        """The image document on screen (the case shows it once this screen closes)."""
        return self.images[self.index]

    @property
    def position(self) -> str:
        return f"image {self.index + 1} of {len(self.images)}"

    def _legend(self) -> None:
        view = self.query_one(ImageView)
        width, level = view.window
        named = next((name for name, w in WINDOWS.items() if w == view.window), f"W {width:.0f} L {level:.0f}")
        facts = f"{self.position} · window: {named}" + (f" · zoom ×{view.zoom:g}" if view.zoom > 1 else "")
        self.query_one("#full-legend", Static).update(
            Content.assemble((facts, "bold"), "\n", image_legend(self.images[self.index])))

    def action_window(self, name: str) -> None:
        self.query_one(ImageView).set_view(window=WINDOWS[name])
        self._legend()

    def action_contrast(self, factor: float) -> None:
        view = self.query_one(ImageView)
        view.set_view(window=(view.window[0] * factor, view.window[1]))
        self._legend()

    def action_zoom(self, step: int) -> None:
        view = self.query_one(ImageView)
        at = min(range(len(ZOOMS)), key=lambda i: abs(ZOOMS[i] - view.zoom))
        view.set_view(zoom=ZOOMS[max(0, min(len(ZOOMS) - 1, at + step))])
        self._legend()

    def action_reset_view(self) -> None:
        self.query_one(ImageView).set_view(window=WINDOWS["full"], zoom=1.0)
        self._legend()

    def action_close(self) -> None:
        self.dismiss()

    def action_step(self, delta: int) -> None:
        self.index = (self.index + delta) % len(self.images)
        self._show()
