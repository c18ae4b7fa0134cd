"""The one save flow every screen uses: ask for a path, write off the event loop, confirm overwrites.

Writers are library calls (:func:`~medpix_tui.export.save_documents`,
:func:`~medpix_tui.export.save_sql_result`, :func:`~medpix_tui.export.export`): atomic, refusing
to replace a file unless ``force``, refusing any path inside the bundle, and each writing its
export manifest beside its files. Document formats come from the export table
(:func:`document_options`).
A refusal becomes a yes/no question, then the same call again with ``force=True``.

In a served app (``medpix-tui serve``) the server's disk is not the user's: the same writer
runs into a private temporary folder, its output (zipped when it is a folder, or a file with
its manifest) is delivered to the browser as a download, and the folder is removed, so
nothing stays on the server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from ..errors import InputError, MedpixError, OutputExistsError
from ..web import SERVED_ENV

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


def dataset_options(what: str, stem: str, write: Callable[[str, Path, bool], Any], *,
                    skip: tuple[str, ...] = ()) -> list[SaveOption]:
    """One option per folder export of the table that has no document file (CSV, RAG, graph, Hugging Face...).

    ``write(fmt, path, force)`` exports the results in format ``fmt`` (with its manifest); ``skip``
    names formats the screen offers its own way. Options: ``"<what> as <format> (folder)"``,
    default folder ``<stem>-<format>``.
    """
    from ..export import FORMATS

    return [SaveOption(f"{what} as {f.label} (folder)", f"{stem}-{f.name}", partial(write, f.name))
            for f in FORMATS.values()
            if f.dataset is not None and f.folder and f.documents is None and f.name not in skip]


def resolve_path(text: str, base: Path) -> Path:
    """A path as typed: ``~`` expanded, relative to the folder the app was started in."""
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else base / path


def is_served(app: MedpixApp) -> bool:
    """Whether the user sits at a browser (textual-serve), not at this machine's terminal."""
    return app.is_web or os.environ.get(SERVED_ENV) == "1"


async def save_interactively(app: MedpixApp, title: str, options: list[SaveOption]) -> Path | None:
    """Run the dialog and the write; notify the outcome. Call from an async worker.

    A write that fails brings the dialog back with the same choice and path, so a typo is
    fixed rather than retyped; a missing folder is offered to be created.
    """
    from .screens.dialogs import ConfirmDialog, SaveDialog

    if is_served(app):
        return await _deliver_interactively(app, title, options)
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
        except OutputExistsError as exc:
            if not await app.push_screen_wait(ConfirmDialog(_replace_question(path, exc.path))):
                app.notify("Nothing saved", title="Save")
                return None
            force = True
            continue
        except Exception as exc:  # noqa: BLE001 - a save must never take the app down
            _notify_failed(app, exc)
            return False
        app.notify(f"Saved {path}", title="Save")
        return path


def _replace_question(path: Path, existing: Path | None) -> str:
    """Ask about what the user named: the export manifest beside a save (``<file>.manifest.json``) is
    the app's own record, named only as such."""
    if existing is not None and not existing.name.endswith(".manifest.json"):
        return f"{existing} already exists.\nReplace it?"
    if existing is not None and not path.exists():  # only the record of an earlier save is left
        return f"{path} was saved here before (its export manifest is still there).\nReplace it?"
    return f"{path} already exists.\nReplace it?"


def _notify_failed(app: MedpixApp, exc: Exception) -> None:
    """Tell of a failed save: our errors in their own words, anything else with its type."""
    message = str(exc) if isinstance(exc, MedpixError) else f"{type(exc).__name__}: {exc}"
    app.notify(message, title="Save failed", severity="error")


def _locked(app: MedpixApp, write: Writer, path: Path, force: bool) -> Any:
    with app.store_lock:
        return write(path, force)


async def _deliver_interactively(app: MedpixApp, title: str, options: list[SaveOption]) -> Path | None:
    """The served save: a file name, the writer into a temporary folder, a browser download."""
    from .screens.dialogs import SaveDialog

    picked = await app.push_screen_wait(SaveDialog(title, options, None))
    if picked is None:
        return None
    option, path = picked
    try:
        payload, name = await asyncio.to_thread(_render_download, app, option.write, path.name)
    except Exception as exc:  # noqa: BLE001 - a save must never take the app down
        _notify_failed(app, exc)
        return None
    app.deliver_binary(payload, save_filename=name)
    app.notify(f"{name} sent to your browser's downloads", title="Save")
    return Path(name)


def _render_download(app: MedpixApp, write: Writer, name: str) -> tuple[BinaryIO, str]:
    """Run ``write`` in a private temporary folder; its output as an open, unnamed temporary file.

    The file, not bytes in memory: "all images" zips about 200 MB, and the web driver reads
    the download in chunks and closes (so deletes) the file when the browser has it all.

    A folder comes as a zip of the folder (its ``manifest.json`` inside). A file that has an
    export manifest beside it (``<file>.manifest.json``, every library save) comes as
    ``<file>.zip`` holding both, so the download is checked with ``medpix-tui export verify``
    and redone with ``--from-manifest`` like a save on disk; a lone file comes as it is.
    """
    from ..export import MANIFEST_SUFFIX

    if not name or name in (".", ".."):
        raise InputError("type a file name")
    buffer = tempfile.TemporaryFile(prefix="medpix-download-")
    try:
        with tempfile.TemporaryDirectory(prefix="medpix-download-") as tmp:
            target = Path(tmp) / name
            _locked(app, write, target, False)
            manifest = target.with_name(target.name + MANIFEST_SUFFIX)
            if target.is_dir():
                with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNG and Parquet are compressed
                    for file in sorted(p for p in target.rglob("*") if p.is_file()):
                        archive.write(file, f"{name}/{file.relative_to(target).as_posix()}")
                name = f"{name}.zip"
            elif manifest.is_file():
                with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                    archive.write(target, name)
                    archive.write(manifest, manifest.name)
                name = f"{name}.zip"
            else:
                with open(target, "rb") as source:
                    shutil.copyfileobj(source, buffer)
    except BaseException:
        buffer.close()
        raise
    buffer.seek(0)
    return buffer, name
