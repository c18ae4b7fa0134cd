"""The one save flow every screen uses: ask for a path, write off the event loop, confirm overwrites.

Writers are library calls (:func:`~medpix_tui.export.write_documents`,
:func:`~medpix_tui.export.export`): atomic, refusing to replace a file unless ``force``, and
refusing any path inside the bundle. Document formats come from the export table
(:func:`document_options`).
A refusal becomes a yes/no question, then the same call again with ``force=True``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MedpixError, OutputExistsError

if TYPE_CHECKING:
    from .app import MedpixApp

#: ``write(path, force)`` runs in a thread and returns what it wrote.
Writer = Callable[[Path, bool], Any]


@dataclass(frozen=True)
class SaveOption:
    """One thing a screen can save: its label in the dialog, a default file name, the writer."""

    label: str
    default_name: str
    write: Writer


def document_options(what: str, stem: str, write: Callable[[str, Path, bool], Any]) -> list[SaveOption]:
    """One option per document format of the export table (:data:`~medpix_tui.export.FORMATS`).

    ``write(fmt, path, force)`` writes the documents in format ``fmt``; the options are named
    ``"<what> as <format>"`` with the default file name ``<stem><suffix>``.
    """
    from ..export import document_formats

    return [SaveOption(f"{what} as {f.label}", f"{stem}{f.suffix}", partial(write, f.name))
            for f in document_formats()]


def resolve_path(text: str, base: Path) -> Path:
    """A path as typed: ``~`` expanded, relative to the folder the app was started in."""
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else base / path


async def save_interactively(app: MedpixApp, title: str, options: list[SaveOption]) -> Path | None:
    """Run the dialog and the write; notify the outcome. Call from an async worker."""
    from .screens.dialogs import ConfirmDialog, SaveDialog

    picked = await app.push_screen_wait(SaveDialog(title, options, app.save_dir))
    if picked is None:
        return None
    option, path = picked
    force = False
    while True:
        try:
            await asyncio.to_thread(_locked, app, option.write, path, force)
        except OutputExistsError:
            if not await app.push_screen_wait(ConfirmDialog(f"{path} already exists.\nReplace it?")):
                app.notify("Nothing saved", title="Save")
                return None
            force = True
            continue
        except MedpixError as exc:
            app.notify(str(exc), title="Save failed", severity="error")
            return None
        except Exception as exc:  # a save must never take the app down
            app.notify(f"{type(exc).__name__}: {exc}", title="Save failed", severity="error")
            return None
        app.notify(f"Saved {path}", title="Save")
        return path


def _locked(app: MedpixApp, write: Writer, path: Path, force: bool) -> Any:
    with app.store_lock:
        return write(path, force)
