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

The cache folder is anybody's to write, so a page is never trusted: it is read only if it is
a regular file of at most :data:`PAGE_LIMIT` bytes with exactly the shape written here, its
totals are the bundle's, and every row agrees with the bundle's own keyword index (image,
case, location, plane and case title), so a crafted file can neither crash the start nor show
rows the bundle does not hold. Anything else is ignored, and :func:`read_first_page` says why.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import try_write_json
from ..bundle import (
    IMAGE_DIR,
    SEARCH_FILE,
    Bundle,
    read_regular,
)
from ..errors import BundleError
from ..query import project, value_at
from ..session import ROW_FIELDS, SearchResult
from ..source import IMAGE_SUFFIX, MODALITIES

#: Rows kept: a tall terminal's first screen and the page below it.
ROWS = 120
FORMAT = 1
#: Pages kept in the folder: one per bundle, for the bundles started most recently.
KEEP = 8
_PAGE_NAME = re.compile(r"[0-9a-f]{64}\.json")
#: The largest page read: 120 rows take about 30 KB.
PAGE_LIMIT = 1 << 20
#: The longest text kept in a row or a title.
TEXT_LIMIT = 2000
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")


@dataclass(frozen=True)
class FirstPage:
    """The first rows of the opening listing, with the totals of the whole listing."""

    images: list[dict[str, Any]]
    titles: dict[str, str]
    image_count: int
    case_count: int


def default_dir() -> Path:
    """Where ``medpix-tui`` keeps first pages: ``first-page/`` in the cache folder.

    See :func:`medpix_tui.locations.first_page_dir`.
    """
    from ..locations import first_page_dir

    return first_page_dir().require()


def page_path(folder: Path, bundle: Bundle) -> Path | None:
    """The bundle's file in ``folder``, named by its manifest digest (None without a digest)."""
    try:
        name = f"{bundle.digest}.json"
    except BundleError:  # no digest to name it by: nothing is kept or read
        return None
    return Path(folder) / name if _PAGE_NAME.fullmatch(name) else None


def _text_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= TEXT_LIMIT)


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict) or not set(row) <= {"image", "U_id", "Type", "Description", "Location"}:
        return "a row is not an object of the shown fields"
    if not (isinstance(row.get("image"), str) and _ID.fullmatch(row["image"])
            and isinstance(row.get("U_id"), str) and _ID.fullmatch(row["U_id"])):
        return "a row has no plain image and case id"
    if row.get("Type") not in (*MODALITIES, None) or not _text_or_none(row.get("Location")):
        return f"row {row['image']} has a malformed Type or Location"
    desc = row.get("Description", {})
    if not (isinstance(desc, dict) and set(desc) <= {"Plane"} and _text_or_none(desc.get("Plane"))):
        return f"row {row['image']} has a malformed Description"
    return None


def page_problem(data: Any, bundle: Bundle) -> str | None:
    """Why ``data`` (a parsed page file) is not a page of ``bundle``, or None when it is one."""
    if not isinstance(data, dict) or set(data) != {"format", "images", "titles", "image_count", "case_count"}:
        return "not a first page"
    if data["format"] != FORMAT:
        return f"format {str(data['format'])[:20]!r}"
    images, titles = data["images"], data["titles"]
    if not isinstance(images, list) or len(images) > ROWS:
        return f"images is not a list of at most {ROWS} rows"
    for row in images:
        problem = _row_problem(row)
        if problem:
            return problem
    if len({row["image"] for row in images}) != len(images):
        return "an image is listed twice"
    if not (isinstance(titles, dict) and set(titles) == {row["U_id"] for row in images}
            and all(isinstance(t, str) and len(t) <= TEXT_LIMIT for t in titles.values())):
        return "titles do not match the rows"
    counts = bundle.manifest.get("counts")
    for key, total in (("image_count", "Image_Descriptions"), ("case_count", "Clinical_Reports")):
        if type(data[key]) is not int or data[key] < 0:
            return f"{key} is not a count"
        if isinstance(counts, dict) and data[key] != counts.get(total):
            return f"{key} is not the bundle's"
    files = bundle.manifest.get("files")
    if isinstance(files, dict):
        stray = [row["image"] for row in images if f"{IMAGE_DIR}/{row['image']}{IMAGE_SUFFIX}" not in files]
        if stray:
            return f"image {stray[0]} is not in the bundle"
        if SEARCH_FILE in files:
            return _index_problem(bundle, images, titles)
    return None


def _index_problem(bundle: Bundle, images: list[dict[str, Any]], titles: dict[str, str]) -> str | None:
    """Whether each row says what the bundle's keyword index says (a few milliseconds, no store)."""
    path = bundle.root / SEARCH_FILE
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return "the bundle's keyword index is not a file"
        con = sqlite3.connect(f"file:{path.resolve().as_posix()}?mode=ro&immutable=1", uri=True)
    except (OSError, sqlite3.Error):
        return "the bundle's keyword index cannot be read"
    try:
        marks = ",".join("?" * len(images))
        known = {r[0]: r[1:] for r in con.execute(
            f"SELECT i.image, c.u_id, i.location, i.plane FROM images i JOIN image_case c ON c.image = i.image "
            f"WHERE i.image IN ({marks})", [row["image"] for row in images])}
        uids = sorted(titles)
        case_titles = {uid: diagnosis or title for uid, diagnosis, title in con.execute(
            f"SELECT u_id, diagnosis, title FROM cases WHERE u_id IN ({','.join('?' * len(uids))})", uids)}
    except sqlite3.Error:
        return "the bundle's keyword index cannot be read"
    finally:
        con.close()
    for row in images:
        plane = value_at(row, "Description.Plane")
        said = (row["U_id"], row.get("Location") if isinstance(row.get("Location"), str) else "",
                plane if isinstance(plane, str) else "")
        if known.get(row["image"]) != said:
            return f"row {row['image']} differs from the bundle"
    for uid, title in titles.items():
        if case_titles.get(uid, "") != title:  # as searching.case_titles names a case
            return f"the title of {uid} differs from the bundle"
    return None


def load_first_page(folder: Path, bundle: Bundle) -> tuple[FirstPage | None, str | None]:
    """(the bundle's kept first page or None, why a page there was ignored or None).

    Never raises: a page that is not a regular file, too big, not JSON or not this bundle's is
    ignored, and the reason is returned for a notice.
    """
    path = page_path(folder, bundle)
    if path is None:
        return None, None
    try:
        raw = read_regular(path, PAGE_LIMIT)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path}: {exc.strerror or exc}"
    try:
        data = json.loads(raw)
        problem = page_problem(data, bundle)
    except (ValueError, RecursionError) as exc:
        problem = f"not JSON ({str(exc)[:60]})"
    except Exception as exc:  # noqa: BLE001 - a kept page must never stop a start
        problem = f"unreadable ({type(exc).__name__})"
    if problem:
        return None, f"{path}: {problem}"
    with contextlib.suppress(OSError):
        os.utime(path)  # a page in use is a recent one: pruning keeps it
    return FirstPage(data["images"], data["titles"], data["image_count"], data["case_count"]), None


def read_first_page(folder: Path, bundle: Bundle) -> FirstPage | None:
    """The bundle's kept first page, or None when there is none or it is not to be trusted."""
    return load_first_page(folder, bundle)[0]


def write_first_page(folder: Path, bundle: Bundle, result: SearchResult, titles: dict[str, str]) -> Path | None:
    """Keep the first rows of ``result`` (the opening listing) for the next start; None if not written."""
    path = page_path(folder, bundle)
    if path is None:
        return None
    fields = list(ROW_FIELDS)
    images = [project(d, fields) for d in result.images[:ROWS]]
    data = {"format": FORMAT, "images": images, "titles": {d["U_id"]: titles.get(d["U_id"], "") for d in images},
            "image_count": len(result.images), "case_count": result.case_count}
    if not try_write_json(path, data):
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
