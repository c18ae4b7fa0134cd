"""The search a bundle was left on, remembered between starts: keywords, field query, facets, position.

One small JSON file per bundle in the user state folder (``searches/``), named by the digest
of the bundle's manifest, as the kept first page is (:mod:`.first_page`); written atomically,
so a crash mid-write leaves the previous one. A file that cannot be read, is not ours, or
belongs to another bundle is ignored, and the caller says so (a notice, not an error).
No Textual here: the search screen gathers and applies the state.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..atomic import try_write_json
from ..bundle import Bundle
from ..errors import BundleError
from ..session import FACET_BY_KEY, SearchRequest
from ..store import COLLECTIONS, IMAGES

FORMAT = 1
KIND = "medpix-tui search state"


@dataclass(frozen=True)
class Remembered:
    """What the search screen shows, as kept between starts: the request typed and ticked, and the cursor."""

    #: Keywords, field query and facets (a model's answer, ``within``, is not kept: it belongs to one run).
    request: SearchRequest = field(default_factory=SearchRequest)
    #: The image the results cursor was on.
    position: str | None = None

    @classmethod
    def of(cls, request: SearchRequest, position: str | None) -> Remembered:
        facets = {k: frozenset(v) for k, v in request.facets.items() if v}
        return cls(replace(request, pairs=tuple(request.pairs), facets=facets, within=(), within_label=""), position)

    @property
    def empty(self) -> bool:
        return self.request == SearchRequest() and self.position is None


def _digest(bundle: Bundle) -> str | None:
    try:
        return bundle.digest
    except BundleError:  # no digest to name it by: nothing is remembered
        return None


def state_path(folder: Path, bundle: Bundle) -> Path | None:
    """The bundle's state file in ``folder`` (None when the bundle has no manifest digest)."""
    digest = _digest(bundle)
    if digest is None or not all(c in "0123456789abcdef" for c in digest):
        return None
    return Path(folder) / "searches" / f"{digest}.json"


def read_state(folder: Path, bundle: Bundle) -> tuple[Remembered | None, str | None]:
    """The remembered search and, when a file was there but ignored, why (for a notice)."""
    path = state_path(folder, bundle)
    if path is None or not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None, f"the remembered search ({path}) could not be read: starting afresh"
    try:
        if not isinstance(data, dict) or data.get("kind") != KIND or data.get("format") != FORMAT:
            raise ValueError("not a search state")
        if data.get("bundle") != _digest(bundle):
            raise ValueError("another bundle's")
        return _parse(data), None
    except (ValueError, TypeError, KeyError) as exc:
        return None, f"the remembered search ({path}) was ignored ({exc}): starting afresh"


def _parse(data: dict[str, Any]) -> Remembered:
    keywords, collection, position = data.get("keywords", ""), data.get("collection", IMAGES), data.get("position")
    pairs = data.get("pairs", [])
    facets = data.get("facets", {})
    if (not isinstance(keywords, str) or collection not in COLLECTIONS
            or not (position is None or isinstance(position, str))):
        raise ValueError("bad values")
    if not (isinstance(pairs, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                                            for p in pairs)):
        raise ValueError("bad field query")
    if not (isinstance(facets, dict)
            and all(k in FACET_BY_KEY and isinstance(v, list) and all(isinstance(x, str) for x in v)
                    for k, v in facets.items())):
        raise ValueError("bad facets")
    return Remembered(SearchRequest(keywords, collection, tuple((p, r) for p, r in pairs),
                                    {k: frozenset(v) for k, v in facets.items() if v}), position)


def write_state(folder: Path, bundle: Bundle, state: Remembered) -> Path | None:
    """Remember ``state`` for the bundle (atomically); None when it could not be written."""
    path = state_path(folder, bundle)
    if path is None:
        return None
    request = state.request
    data = {"kind": KIND, "format": FORMAT, "bundle": _digest(bundle), "keywords": request.keywords,
            "collection": request.collection, "pairs": [list(p) for p in request.pairs],
            "facets": {k: sorted(v) for k, v in request.facets.items()}, "position": state.position}
    if not try_write_json(path, data):
        return None
    return path
