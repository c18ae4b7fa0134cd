"""The first screen's rows, kept from the last start so the next start draws them at once.

The search screen always opens on every image in id order. Computing that needs the store:
importing mongita (which imports pymongo) and reading every document, about a third of
the start. So the app keeps the first rows of that listing, their case titles and its
totals in the user cache folder, one small JSON file per bundle, named by the digest of the
bundle's manifest (any change to a bundle changes its manifest). On the next start the
table shows them before the store opens; the store then opens behind the drawn screen and
its answer replaces them. This is the catalog cache of SQL IDEs such as Harlequin, applied
to the first page. A missing, stale or unreadable file only means a slower start. Only the
pages of the :data:`KEEP` bundles started most recently are kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_file
from ..bundle import MANIFEST_SUM, Bundle, cache_dir
from ..errors import InputError
from ..query import project
from ..session import ROW_FIELDS, SearchResult

#: Rows kept: a tall terminal's first screen and the page below it.
ROWS = 120
FORMAT = 1
#: Pages kept in the folder: one per bundle, for the bundles started most recently.
KEEP = 8
_PAGE_NAME = re.compile(r"[0-9a-f]{64}\.json")


@dataclass(frozen=True)
class FirstPage:
    """The first rows of the opening listing, with the totals of the whole listing."""

    images: list[dict[str, Any]]
    titles: dict[str, str]
    image_count: int
    case_count: int


def default_dir() -> Path:
    """Where ``medpix-tui`` keeps first pages: ``first-page/`` in the cache folder."""
    return cache_dir() / "first-page"


def page_path(folder: Path, bundle: Bundle) -> Path | None:
    """The bundle's file in ``folder``, named by its manifest digest (None without a digest)."""
    try:
        digest = (bundle.root / MANIFEST_SUM).read_text(encoding="ascii").split(" ", 1)[0]
    except (OSError, UnicodeDecodeError):
        return None
    name = f"{digest}.json"
    return Path(folder) / name if _PAGE_NAME.fullmatch(name) else None


def read_first_page(folder: Path, bundle: Bundle) -> FirstPage | None:
    """The bundle's kept first page, or None when there is none or it cannot be read."""
    path = page_path(folder, bundle)
    try:
        data = json.loads(path.read_text(encoding="utf-8")) if path else None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return None
        page = FirstPage(data["images"], data["titles"], int(data["image_count"]), int(data["case_count"]))
        if not (isinstance(page.titles, dict)
                and all(isinstance(d, dict) and isinstance(d.get("image"), str) and isinstance(d.get("U_id"), str)
                        for d in page.images)):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # a page in use is a recent one: pruning keeps it
        return page
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_first_page(folder: Path, bundle: Bundle, result: SearchResult, titles: dict[str, str]) -> Path | None:
    """Keep the first rows of ``result`` (the opening listing) for the next start; None if not written."""
    path = page_path(folder, bundle)
    if path is None:
        return None
    fields = list(ROW_FIELDS)
    images = [project(d, fields) for d in result.images[:ROWS]]
    data = {"format": FORMAT, "images": images, "titles": {d["U_id"]: titles.get(d["U_id"], "") for d in images},
            "image_count": len(result.images), "case_count": result.case_count}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, force=True) as tmp:
            tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    except (OSError, InputError):
        return None
    prune_pages(path.parent)
    return path


def prune_pages(folder: Path, keep: int = KEEP) -> list[Path]:
    """Remove all but the ``keep`` most recently used pages in ``folder``; return those removed.

    Only files named like a page are touched, so a mistaken folder loses nothing else, and a
    page that vanished or cannot be removed is no reason to fail a start.
    """
    pages = []
    with contextlib.suppress(OSError):
        pages = [(p.stat().st_mtime, p) for p in Path(folder).iterdir() if _PAGE_NAME.fullmatch(p.name)]
    removed = []
    for _, old in sorted(pages, reverse=True)[keep:]:
        with contextlib.suppress(OSError):
            old.unlink()
            removed.append(old)
    return removed
