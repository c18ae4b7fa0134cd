"""One image on the whole screen, to see detail; the arrows step through the case."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from ..app import GuardedScreen, alive, medpix
from ..widgets.footer import KeyFooter
from ..widgets.image_view import ImageView
from .case import image_legend


class ImageScreen(GuardedScreen):
    """A case's images, one at a time, as large as the terminal allows."""

    CSS_PATH = "image.tcss"
    BINDINGS = [
        Binding("escape,f,q", "close", "Close", tooltip="Back to the case"),
        Binding("right,right_square_bracket,n", "step(1)", "Next image", key_display="→"),
        Binding("left,left_square_bracket,p", "step(-1)", "Prev image", key_display="←"),
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
        self.query_one("#full-legend", Static).update(image_legend(doc))
        self.query_one(ImageView).show(medpix(self).bundle.image_path(doc["image"]))
        self.sub_title = f"image {self.index + 1} of {len(self.images)}"

    def action_close(self) -> None:
        self.dismiss()

    def action_step(self, delta: int) -> None:
        self.index = (self.index + delta) % len(self.images)
        self._show()
