"""``medpix-tui`` with no command: open the terminal UI on a bundle (the group's default action)."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..web import SERVED_ENV

if TYPE_CHECKING:
    from ..tui.app import MedpixApp


def history_path() -> Path:
    """Where the SQL screen keeps past queries between sessions (:func:`medpix_tui.locations.history_file`)."""
    from ..locations import history_file

    return history_file().require()


def state_dir() -> Path:
    """Where the UI keeps per-user state: remembered searches, quiz progress, crash logs
    (:func:`medpix_tui.locations.state_dir`)."""
    from ..locations import state_dir as located

    return located().require()


def run_tui(bundle_path: str | None) -> None:
    """Resolve (building on first use) the bundle with a progress bar, then run the app."""
    app_class = import_app()
    from ..tui.first_page import default_dir
    from .options import resolve

    bundle = resolve(bundle_path)
    if os.environ.get(SERVED_ENV) == "1":  # a browser's session (medpix-tui serve): keep nothing on the server
        # a browser terminal answers no graphics query: half-blocks
        # and the model loads on the first key that needs it, not in every session (about 250 MB each)
        app = app_class(bundle, image_renderer="halfcell", crash_dir=state_dir() / "logs", preload_model=False)
    else:
        app = app_class(bundle, history_path=history_path(), first_page_dir=default_dir(),
                        crash_dir=state_dir() / "logs", state_dir=state_dir())
    app.run()
    if app.return_code:  # an internal error: Textual printed the line naming the log; never exit 0
        raise SystemExit(app.return_code)


def import_app() -> type[MedpixApp]:
    """Import the app as it must start: textual-image first, the garbage collector paused.

    textual-image asks the terminal about graphics support at import, which must happen
    before Textual takes over the terminal (textual-image's README). The imports create
    objects that live as long as the process; the collector would walk them again and again
    while they load (about a tenth of the start), so it is paused for them and they are
    frozen out of later collections.
    """
    gc.disable()
    try:
        import textual_image.renderable  # noqa: F401

        from ..tui.app import MedpixApp
    finally:
        gc.freeze()
        gc.enable()
    return MedpixApp
