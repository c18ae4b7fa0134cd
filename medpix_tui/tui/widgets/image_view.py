"""An image decoded in a thread and drawn by textual-image, or a placeholder saying why not.

Decoding off the event loop keeps stepping through a case smooth; a missing or corrupt
file, or one Pillow cannot read, becomes a line of text in place of the picture. A window
(width and level over the 0-255 grey values, as a radiology viewer's) and a zoom toward
the centre are applied to the decoded picture, so changing them needs no new decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from textual import work
from textual.app import ComposeResult
from textual.containers import Container
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import get_current_worker

from ...bundle import open_regular
from ..app import alive

#: Larger images are shrunk before display: no terminal shows more pixels than this.
MAX_SIDE = 1024
#: Window presets: name -> (width, level) over 0-255 grey values.
WINDOWS: dict[str, tuple[float, float]] = {
    "full": (256.0, 128.0), "soft tissue": (128.0, 128.0), "bright": (160.0, 200.0), "dark": (160.0, 60.0),
}
ZOOMS = (1.0, 1.5, 2.0, 3.0, 4.0)


def windowed(picture: PILImage.Image, width: float, level: float, zoom: float) -> PILImage.Image:
    """``picture`` cropped to its centre by ``zoom`` and mapped through a window (width, level)."""
    if zoom > 1:
        w, h = picture.size
        cw, ch = max(1, int(w / zoom)), max(1, int(h / zoom))
        left, top = (w - cw) // 2, (h - ch) // 2
        picture = picture.crop((left, top, left + cw, top + ch))
    if (width, level) == WINDOWS["full"]:
        return picture
    low = level - width / 2
    table = [max(0, min(255, round((v - low) * 255 / max(width, 1.0)))) for v in range(256)]
    return picture.point(table * len(picture.getbands()))


class ImageView(Container):
    """Shows one image file, centred, keeping its aspect ratio."""

    DEFAULT_CSS = """
    ImageView { align: center middle; height: 1fr; }
    ImageView > .picture { width: auto; height: auto; }
    ImageView > #placeholder { width: 100%; height: auto; color: $text-muted; text-align: center; display: none; }
    ImageView.-failed > .picture, ImageView.-empty > .picture { display: none; }
    ImageView.-failed > #placeholder, ImageView.-empty > #placeholder { display: block; }
    """

    class Loaded(Message):
        """An image was shown (``ok``) or replaced by its placeholder."""

        def __init__(self, view: ImageView, path: Path, ok: bool) -> None:
            super().__init__()
            self.view = view
            self.path = path
            self.ok = ok

    def __init__(self, image_class: Callable[..., Widget], *, id: str | None = None) -> None:
        super().__init__(id=id, classes="-empty")
        self._image_class = image_class
        self._picture: Any = None  # a textual-image widget
        self.path: Path | None = None
        self._original: PILImage.Image | None = None
        self._original_path: Path | None = None
        self.window: tuple[float, float] = WINDOWS["full"]
        self.zoom = 1.0

    def compose(self) -> ComposeResult:
        yield Static("No image", id="placeholder", markup=False)

    def show(self, path: Path | None) -> None:
        """Load ``path`` (the previous picture stays until the new one is ready)."""
        self.path = path
        if path is None:
            self._placeholder("No image", empty=True)
            return
        self._load(path)

    def set_view(self, window: tuple[float, float] | None = None, zoom: float | None = None) -> None:
        """Change the window and/or zoom and redraw the picture shown."""
        if window is not None:
            self.window = (max(8.0, min(512.0, window[0])), max(0.0, min(255.0, window[1])))
        if zoom is not None:
            self.zoom = zoom
        if self.path is not None and self._original is not None:
            self._load(self.path)

    @work(thread=True, exclusive=True, group="image")
    def _load(self, path: Path) -> None:
        try:
            original = self._original if self._original is not None and path == self._original_path else None
            if original is None:
                # a regular file only: a FIFO planted under an image's name must not block the worker
                with open_regular(path) as raw, PILImage.open(raw) as opened:
                    opened.load()
                    original = opened.convert("RGB")
                original.thumbnail((MAX_SIDE, MAX_SIDE))
            picture = windowed(original, *self.window, self.zoom)
        except FileNotFoundError:
            message = f"Image file missing: {path.name}"
        except (OSError, ValueError, PILImage.DecompressionBombError) as exc:
            message = f"Cannot read {path.name}: {exc}"
        else:
            message = ""
        if get_current_worker().is_cancelled or not alive(self):
            return
        if not message:
            self._original, self._original_path = original, path
        if message:
            self.app.call_from_thread(self._failed, path, message)
        else:
            self.app.call_from_thread(self._loaded, path, picture)

    def _loaded(self, path: Path, picture: PILImage.Image) -> None:
        if path != self.path or not alive(self):
            return
        if self._picture is None:
            self._picture = self._image_class(picture, classes="picture")
            self.mount(self._picture)
        else:
            self._picture.image = picture
        self.remove_class("-failed", "-empty")
        self.post_message(self.Loaded(self, path, True))

    def _failed(self, path: Path, message: str) -> None:
        if path != self.path or not alive(self):
            return
        self._placeholder(message)
        self.post_message(self.Loaded(self, path, False))

    def _placeholder(self, message: str, empty: bool = False) -> None:
        self.query_one("#placeholder", Static).update(message)
        self.set_class(not empty, "-failed")
        self.set_class(empty, "-empty")
