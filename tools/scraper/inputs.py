"""What to harvest: a list of image references from case ids, an Open-i query, or a release's overview CSV.

Every input becomes :class:`ImageRef` values: the image's id and case id, where its PNG
is, and the MedPix case page that describes it. Duplicated image ids are dropped (the
first wins) with one log line each.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from medpix_tui.errors import InputError
from medpix_tui.progress import Progress, silent
from medpix_tui.source import is_plain_id

from . import openi
from .client import Fetcher, FetchError
from .sites import Sites, query_id

log = logging.getLogger(__name__)

OVERVIEW_FILE = "images_overview.csv"
OVERVIEW_COLUMNS = ("Type", "U_id", "ID_Image", "Img_Large", "URL_Article_image")
#: The overview's ``Type`` values and the release's ``Type`` they stand for.
OVERVIEW_TYPES = {"TAC": "CT", "MRI": "MR"}
_CASE_ID = re.compile(r"^MPX\d+$", re.IGNORECASE)


def is_case_id(text: str) -> bool:
    """Whether ``text`` is a MedPix case id (``MPX1009``, any case)."""
    return bool(_CASE_ID.match(text))


@dataclass(frozen=True)
class ImageRef:
    """One image to harvest and where its pieces are."""

    image: str                    # "MPX1009_synpic46283": file name and Descriptions ``image``
    uid: str                      # "MPX1009": the case id
    image_url: str                # absolute URL of the PNG
    page_url: str | None          # the MedPix case page describing it
    type_hint: str | None = None  # CT or MR when the input says so
    caption: str | None = None    # Open-i's caption, a fallback for the page's
    title: str | None = None      # Open-i's title, a fallback for the case title
    abstract: str | None = None   # Open-i's abstract HTML, a fallback for case fields
    figure_id: str | None = None  # MedPix's image id: case?id=<figure id>, rest/image.json?imageID=
    encounter_id: str | None = None  # MedPix's case id for rest/encounter.json (Open-i medpixArticleId)


def dedupe(refs: Iterable[ImageRef]) -> list[ImageRef]:
    """Refs with each image id once (the first); logs every duplicate."""
    seen: set[str] = set()
    unique: list[ImageRef] = []
    for ref in refs:
        if ref.image in seen:
            log.warning("duplicate image id %s in the input; keeping the first", ref.image)
            continue
        seen.add(ref.image)
        unique.append(ref)
    return unique


def refs_from_overview(path: Path, sites: Sites | None = None) -> list[ImageRef]:
    """Refs from an ``images_overview.csv`` (``Type,U_id,ID_Image,Img_Large,URL_Article_image``).

    ``URL_Article_image`` is the image's own case page (``case?id=<figure id>``, one per image).
    """
    sites = sites or Sites()
    try:
        text = Path(path).read_text("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in OVERVIEW_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    refs = []
    for line, row in enumerate(reader, start=2):
        image, uid, url = (row["ID_Image"] or "").strip(), (row["U_id"] or "").strip(), (row["Img_Large"] or "").strip()
        if not (is_plain_id(image) and is_plain_id(uid) and urlparse(url).scheme in ("http", "https")):
            log.warning("%s line %d: skipped (needs a plain ID_Image and U_id and an http(s) Img_Large)", path, line)
            continue
        page = (row["URL_Article_image"] or "").strip() or None
        refs.append(ImageRef(image, uid, sites.url(url, "openi"), sites.url(page) if page else None,
                             OVERVIEW_TYPES.get((row["Type"] or "").strip().upper()), figure_id=query_id(page)))
    return dedupe(refs)


def _http(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and urlparse(value.strip()).scheme in ("http", "https") else None


def ref_from_record(record: dict[str, Any], base: str | Sites) -> ImageRef | None:
    """The ref an Open-i record describes, or None when it lacks an image path or a usable id.

    In a MedPix record ``uid`` is the case id, ``imgLarge`` the image's path (its file name
    is the release's image id), ``medpixImageURL`` the image's own case page
    (``case?id=<medpixFigureId>``) and ``fulltext_html_url`` the case's
    (``bycase?id=<medpixArticleId>``).
    """
    sites = base if isinstance(base, Sites) else Sites(openi=base)
    large = record.get("imgLarge")
    if not isinstance(large, str) or not large.strip():
        return None
    image = PurePosixPath(urlparse(large).path).stem
    if not is_plain_id(image) and isinstance(record.get("uid"), str):
        image = record["uid"]
    uid = image.split("_", 1)[0]
    if not (is_plain_id(image) and "_" in image and is_plain_id(uid)):
        return None
    image_url = sites.url(large, "openi")
    raw_info = record.get("image")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    by_case = _http(record.get("fulltext_html_url"))
    page = _http(record.get("medpixImageURL"))
    if page is None and by_case and not urlparse(by_case).path.rstrip("/").endswith("bycase"):
        page, by_case = by_case, None  # an older record: the case page itself
    figure = record.get("medpixFigureId") if isinstance(record.get("medpixFigureId"), str) else None
    article = record.get("medpixArticleId") if isinstance(record.get("medpixArticleId"), str) else None

    def text(value: object) -> str | None:  # Open-i escapes its text as HTML ("&amp;"), as in the abstract
        return html.unescape(value) if isinstance(value, str) and value.strip() else None

    return ImageRef(image, uid, image_url, sites.url(page) if page else None,
                    caption=text(info.get("caption")), title=text(record.get("title")),
                    abstract=text(record.get("abstract")), figure_id=(figure or "").strip() or query_id(page),
                    encounter_id=(article or "").strip() or query_id(by_case))


def refs_from_openi(fetcher: Fetcher, queries: list[str], *, base: str | Sites = openi.DEFAULT_BASE,
                    coll: str = openi.DEFAULT_COLLECTION, page_size: int = openi.MAX_PAGE,
                    limit: int | None = None, progress: Progress = silent,
                    on_failure: Callable[[str, str], None] = lambda ident, reason: None) -> list[ImageRef]:
    """Refs for each query; a query that is a case id (``MPX1009``) keeps only that case's images."""
    sites = base if isinstance(base, Sites) else Sites(openi=base)
    refs: list[ImageRef] = []
    with progress("Searching Open-i", len(queries)) as advance:
        for query in queries:
            wanted = query.upper() if _CASE_ID.match(query) else None
            found = 0
            try:
                for i, record in enumerate(openi.search(fetcher, query, base=sites.openi, coll=coll,
                                                        page_size=page_size, limit=limit)):
                    ref = ref_from_record(record, sites)
                    if ref is None:
                        log.warning("Open-i query %r record #%d: no usable imgLarge/uid; skipped", query, i + 1)
                    elif wanted is None or ref.uid.upper() == wanted:
                        refs.append(ref)
                        found += 1
            except (FetchError, openi.OpeniError) as exc:
                on_failure(query, str(exc))
            else:
                if not found:
                    on_failure(query, "Open-i returned no MedPix image for it")
            advance(1)
    return dedupe(refs)
