"""Write the harvest as a MedPix 2.0 source folder, all or nothing.

Everything is written into a hidden sibling (``.<name>.partial-<pid>``), validated with
the same :func:`medpix_tui.source.load_source` the ingest uses, and only then renamed to
the destination. An interrupted run leaves the destination untouched; the partial folder
of a dead run is removed by the next one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Self

from PIL import Image

from medpix_tui.atomic import check_replaceable, no_folder_message, pid_alive, replace_dir
from medpix_tui.errors import InputError, OutputExistsError
from medpix_tui.source import (
    CASES_FILE,
    IMAGE_DIR,
    IMAGE_SUFFIX,
    IMAGES_FILE,
    load_source,
)

from .curation import REVIEW_FILE, write_review
from .inputs import OVERVIEW_COLUMNS, OVERVIEW_FILE

log = logging.getLogger(__name__)


def to_png(content: bytes) -> bytes:
    """The image as PNG bytes (converted when it is another format); ValueError when it is no image."""
    try:
        with Image.open(io.BytesIO(content)) as im:
            im.load()
            if im.format == "PNG":
                return content
            buf = io.BytesIO()
            im.save(buf, "PNG")
            return buf.getvalue()
    except Exception as exc:  # PIL raises many types for bodies that are not images
        head = content[:40].decode("ascii", errors="replace").strip()
        raise ValueError(f"not an image ({type(exc).__name__}; body starts {head!r})") from exc


def check_can_write_in(folder: Path, target: Path | None = None) -> None:
    """Refuse, before any request, a ``folder`` that ``target`` (the folder itself by default) cannot
    be written in: one that is a file or lies under one (``--out /etc/passwd/x`` was a
    FileExistsError traceback), or one whose nearest existing folder is not writable."""
    folder = Path(folder)
    for above in (folder, *folder.absolute().parents):
        if above.exists():
            if not above.is_dir():
                raise InputError(f"cannot create {target or folder}: {no_folder_message(folder)}")
            if not os.access(above, os.W_OK | os.X_OK):
                raise InputError(f"cannot create {target or folder}: folder is not writable: {above}")
            return


def _dump(path: Path, data: Any) -> None:
    """JSON laid out as the release's files are (4-space indent, ASCII escapes)."""
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")


class SourceWriter:
    """Collects cases, image documents and PNG files, then commits them as one folder."""

    @staticmethod
    def check(out: Path, force: bool) -> None:
        """Refuse an ``out`` that exists (without ``force``) or is no earlier harvest: before any
        request, so a refused run prints no summary of work it never did."""
        if Path(out).exists() and not force:
            raise OutputExistsError(f"output exists: {out} (pass --force to replace it)")
        check_replaceable(Path(out), CASES_FILE)
        check_can_write_in(Path(out).parent, Path(out))  # the folder is made, then renamed, in there

    def __init__(self, out: Path, *, force: bool = False) -> None:
        self.out = Path(out)
        self.check(self.out, force)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._remove_stale()
        self.staging = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        shutil.rmtree(self.staging, ignore_errors=True)
        (self.staging / IMAGE_DIR).mkdir(parents=True)
        self.cases: list[dict[str, Any]] = []
        self.images: list[dict[str, Any]] = []
        self.overview: list[dict[str, str]] = []

    def _remove_stale(self) -> None:
        for path in self.out.parent.glob(f".{self.out.name}.partial-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                log.info("removing %s left by an interrupted run", path)
                shutil.rmtree(path, ignore_errors=True)

    def add_case(self, case: dict[str, Any], images: list[dict[str, Any]], files: dict[str, bytes],
                 overview: list[dict[str, str]]) -> None:
        """Add one complete case: its document, its image documents and their PNG bytes."""
        for name, data in files.items():
            (self.staging / IMAGE_DIR / f"{name}{IMAGE_SUFFIX}").write_bytes(data)
        self.cases.append(case)
        self.images.extend(images)
        self.overview.extend(overview)

    def commit(self, review: list[dict[str, str]]) -> None:
        """Write the JSON and CSV files, validate the folder, and move it into place."""
        _dump(self.staging / CASES_FILE, self.cases)
        _dump(self.staging / IMAGES_FILE, self.images)
        with open(self.staging / OVERVIEW_FILE, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=OVERVIEW_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.overview)
        write_review(self.staging / REVIEW_FILE, review)
        load_source(self.staging)
        replace_dir(self.staging, self.out)

    def discard(self) -> None:
        """Remove the partial folder (after an error or an interrupt)."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.staging.exists():
            self.discard()
