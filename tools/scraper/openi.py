"""The Open-i search API: build paged queries and read its JSON answers.

``GET {base}/api/search?query=Q&coll=mpx&m=M&n=N`` answers
``{"total": T, "min": M, "max": N, "count": K, "list": [record, ...]}`` (or
``{"Query-Error": "...", "total": 0}``). ``m``/``n`` are 1-based first/last result
indexes. A MedPix record carries ``uid``, ``imgLarge`` (a path such as
``/imgs/512/207/1009/MPX1009_synpic46283.png``), ``image.caption``, ``title``,
``abstract`` (HTML with ``<b>History:</b>``-style labels) and ``fulltext_html_url``
(assumed to be the MedPix case page; see README).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from .client import Fetcher

log = logging.getLogger(__name__)

DEFAULT_BASE = "https://openi.nlm.nih.gov"
DEFAULT_COLLECTION = "mpx"
#: Open-i's largest accepted page (larger ``n - m`` are truncated by the server).
MAX_PAGE = 100


class OpeniError(Exception):
    """An Open-i answer that is not a usable search page."""


@dataclass(frozen=True)
class SearchPage:
    """One page of search results."""

    total: int
    records: list[dict[str, Any]]


def search_url(base: str, query: str, coll: str, m: int, n: int) -> str:
    """URL of results ``m``..``n`` (1-based, inclusive) for ``query`` in collection ``coll``."""
    params = {"query": query, "m": m, "n": n}
    if coll:
        params["coll"] = coll
    return f"{base.rstrip('/')}/api/search?{urlencode(params)}"


def parse_search_page(text: str) -> SearchPage:
    """Read one answer; raises :class:`OpeniError` saying what is wrong with it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OpeniError(f"not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict):
        raise OpeniError(f"expected a JSON object, got {type(data).__name__}")
    if "Query-Error" in data:
        raise OpeniError(f"query error: {str(data['Query-Error'])[:120]}")
    records = data.get("list")
    if records is None:  # absent or null: a search with no results
        records = []
    if not isinstance(records, list):
        raise OpeniError(f"'list' is not an array of records but {type(records).__name__}")
    try:
        total = int(data.get("total", len(records)))
    except (TypeError, ValueError) as exc:
        raise OpeniError(f"'total' is not a number: {data.get('total')!r}") from exc
    return SearchPage(total, [r for r in records if isinstance(r, dict)])


def search(fetcher: Fetcher, query: str, *, base: str = DEFAULT_BASE, coll: str = DEFAULT_COLLECTION,
           page_size: int = MAX_PAGE, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Every record for ``query``, page by page; raises FetchError or OpeniError on a bad page.

    A page's unusable answer is evicted from the cache so a later run asks again.
    """
    page_size = max(1, min(page_size, MAX_PAGE))
    m, seen = 1, 0
    while limit is None or seen < limit:
        url = search_url(base, query, coll, m, m + page_size - 1)
        try:
            page = parse_search_page(fetcher.get(url).text)
        except OpeniError as exc:
            fetcher.forget(url)
            raise OpeniError(f"Open-i page {url}: {exc}") from exc
        records = page.records[: None if limit is None else limit - seen]
        yield from records
        seen += len(records)
        m += len(page.records)
        if not page.records or m > page.total:
            return
