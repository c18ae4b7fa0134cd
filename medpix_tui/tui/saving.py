"""The one save flow every screen uses: ask for a path, write off the event loop, confirm overwrites.

Writers are library calls (:func:`~medpix_tui.export.write_documents`,
:func:`~medpix_tui.export.export`): atomic, and refusing to replace a file unless ``force``.
A refusal becomes a yes/no question, then the same call again with ``force=True``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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


def resolve_path(text: str, base: Path) -> Path:
    """A path as typed: ``~`` expanded, relative to the folder the app was started in."""
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else base / path


async def save_interactively(app: MedpixApp, title: str, options: list[SaveOption]) -> Path | None:
    """Run the dialog and the write; notify the outcome. Call from an async worker.

    A write that fails brings the dialog back with the same choice and path, so a typo is
    fixed rather than retyped; a missing folder is offered to be created.
    """
    from .screens.dialogs import ConfirmDialog, SaveDialog

    choice, typed = 0, None
    while True:
        picked = await app.push_screen_wait(SaveDialog(title, options, app.save_dir, choice=choice, path=typed))
        if picked is None:
            return None
        option, path = picked
        choice, typed = options.index(option), str(path)
        folder = path.parent
        if not folder.exists():
            if not await app.push_screen_wait(ConfirmDialog(f"The folder {folder} does not exist.\nCreate it?",
                                                            yes="Create (y)", no="Back (n)")):
                continue
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                app.notify(f"Cannot create {folder}: {exc.strerror or exc}", title="Save failed", severity="error")
                continue
        saved = await _write(app, option, path)
        if saved is not False:
            return saved


async def _write(app: MedpixApp, option: SaveOption, path: Path) -> Path | None | Literal[False]:
    """Write, confirming a replacement: the path saved, None when the user kept the old file, False on failure."""
    from .screens.dialogs import ConfirmDialog

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
            return False
        except Exception as exc:  # a save must never take the app down
            app.notify(f"{type(exc).__name__}: {exc}", title="Save failed", severity="error")
            return False
        app.notify(f"Saved {path}", title="Save")
        return path


def _locked(app: MedpixApp, write: Writer, path: Path, force: bool) -> Any:
    with app.store_lock:
        return write(path, force)
