"""A search session over a store: keywords, the authors' field query and facets.

Pure functions over :class:`~medpix_tui.store.Store`, importable without Textual: the
search screen only gathers input and draws results, and the CLI, tests and the benchmark
run the same searches without a terminal. Results are
always images (the table lists images); a field query on ``Clinical_Reports`` selects the
images of the matching cases, one on ``Image_Reports`` the matching images.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import vocabulary
from .errors import QueryError
from .query import and_filters, field_filter
from .search import not_yet_searchable, parse_keywords
from .source import SPLITS
from .store import CASES, IMAGES, REPORTS, Store


@dataclass(frozen=True)
class Facet:
    """One facet: the document path it counts and how its values read."""

    key: str
    title: str
    path: str


FACETS: tuple[Facet, ...] = (
    Facet("modality", "Modality", "Type"),
    Facet("category", "Location category", "Location Category"),
    Facet("location", "Location", "Location"),
    Facet("plane", "Plane", "Description.Plane"),
    Facet("sex", "Sex", "Description.Sex"),
    Facet("age", "Age range", "Description.Age"),
    Facet("acr", "ACR code", "Description.ACR Codes"),
    Facet("split", "Split", "U_id"),  # counted by case, then read through the store's splits
    # the model's answer beside the label ("same"/"differs"; absent in a bundle without a model)
    Facet("pred_modality", "Prediction vs modality", "Prediction.modality_vs_label"),
    Facet("pred_location", "Prediction vs location category", "Prediction.location_vs_label"),
)
FACET_BY_KEY = {f.key: f for f in FACETS}

#: Age ranges: label -> regex over the age string (ages in MedPix are whole years).
AGE_RANGES: dict[str, str] = {
    **{f"{d * 10}-{d * 10 + 9}": (r"\d" if d == 0 else f"{d}\\d") for d in range(8)},
    "80+": r"[89]\d|\d{3,}",
}
SPLIT_ORDER = SPLITS
#: Rows whose keyword snippets come with a search (about two screens); later rows' on demand.
SNIPPET_ROWS = 40

#: Dotted fields offered as suggestions in the field query, per collection.
IMAGE_FIELDS = ("image", "U_id", "Type", "Location", "Location Category", "Description.Caption",
                "Description.Modality", "Description.Plane", "Description.Age", "Description.Sex",
                "Description.ACR Codes", "Description.Figure Part")
CASE_FIELDS = ("U_id", "Case.Title", "Case.History", "Case.Exam", "Case.Findings", "Case.Differential Diagnosis",
               "Case.Case Diagnosis", "Case.Diagnosis By", "Case.Treatment & Follow Up", "Case.Discussion",
               "Topic.Title", "Topic.Disease Discussion", "Topic.ACR Code", "Topic.Category", "Topic.Keywords",
               "Topic.Reference", "TAC", "MRI")
#: The document fields a results row shows (the title comes from the case).
ROW_FIELDS = ("image", "U_id", "Type", "Description.Plane", "Location")
FIELDS = {IMAGES: IMAGE_FIELDS, CASES: CASE_FIELDS, REPORTS: IMAGE_FIELDS + CASE_FIELDS[1:16]}


def age_range(age: Any) -> str | None:
    """The age range an age string falls in (None when it is not a whole number)."""
    text = str(age).strip()
    for label, pattern in AGE_RANGES.items():
        if re.fullmatch(pattern, text):
            return label
    return None


@dataclass(frozen=True)
class SearchRequest:
    """Everything the user has typed or ticked on the search screen."""

    keywords: str = ""
    collection: str = IMAGES
    pairs: tuple[tuple[str, str], ...] = ()
    facets: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: Only these images, best first (the model's answer to "similar to" or a text query).
    within: tuple[str, ...] = ()
    within_label: str = ""

    @property
    def active_keywords(self) -> str:
        """The keywords, once they hold a word to search for (:func:`~medpix_tui.search.not_yet_searchable`)."""
        text = self.keywords.strip()
        return text if text and not_yet_searchable(text) is None else ""

    def describe(self) -> str:
        """A short summary for status lines."""
        parts = [self.within_label] if self.within else []
        parts += [f'"{self.active_keywords}"'] if self.active_keywords else []
        parts += [f"{p}~{v}" for p, v in self.pairs]
        parts += [f"{FACET_BY_KEY[k].title.lower()}: {', '.join(sorted(v))}" for k, v in self.facets.items() if v]
        return "; ".join(parts) or "all images"


@dataclass(frozen=True, repr=False)
class SearchResult:
    """The images a request selects, in display order (ranked when keywords were given)."""

    request: SearchRequest
    images: list[dict[str, Any]]
    #: The image filters before facets (field query, keywords, model answer): facets count within them.
    base: tuple[dict[str, Any], ...]
    ranked: bool
    #: image -> where its keywords hit (hits between \x01 and \x02), filled as rows are shown.
    snippets: dict[str, str] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:
        # short: Textual's @work describes each worker by the repr of its arguments, on the event loop
        return f"SearchResult({self.request!r}, {len(self.images)} images, ranked={self.ranked})"

    @property
    def names(self) -> list[str]:
        return [d["image"] for d in self.images]

    @property
    def case_count(self) -> int:
        return len({d["U_id"] for d in self.images})

    @property
    def keywords(self) -> str:
        """The keywords that selected these images ("" when none did)."""
        return self.request.active_keywords

    def selection_filter(self) -> dict[str, Any]:
        """A filter on ``Image_Descriptions`` selecting exactly these images."""
        return {"image": {"$in": self.names}}


def _cleaner(facet: Facet) -> Callable[[Any], Any] | None:
    """How a facet reads raw label strings (:mod:`.vocabulary`): one meaning is one value."""
    return None if facet.key in ("age", "split") else vocabulary.FIELDS.get(facet.path)


#: The facet value of a label that says nothing (N/A, the ACR placeholder -1.-1, a missing field).
UNKNOWN = "unknown"
_RAW: dict[tuple[int, str], list[Any]] = {}


def _clean_value(cleaner: Callable[[Any], Any], raw: Any) -> str:
    value = cleaner(raw)
    return UNKNOWN if value in (None, "") else str(value)


def _raw_values(store: Store, path: str) -> list[Any]:
    """Every raw value of an image field in the store (kept per store: a bundle does not change)."""
    key = (id(store), path)
    if key not in _RAW:
        _RAW[key] = list(store.facet_counts(IMAGES, {}, [path])[path])
    return _RAW[key]


def facet_clause(store: Store, key: str, values: frozenset[str]) -> dict[str, Any]:
    """The filter for the ticked values of one facet (values of a facet are ORed)."""
    facet = FACET_BY_KEY[key]
    if key == "age":
        return {facet.path: {"$regex": f"^(?:{'|'.join(AGE_RANGES[v] for v in sorted(values))})$"}}
    if key == "split":
        return store.split_filter(*values)
    cleaner = _cleaner(facet)
    if cleaner is not None:  # a clean value stands for every raw spelling of it
        raw = [v for v in _raw_values(store, facet.path) if _clean_value(cleaner, v) in values]
        return {facet.path: {"$in": sorted(raw, key=str)}}
    return {facet.path: {"$in": sorted(values)}}


def _facet_clauses(store: Store, facets: Mapping[str, frozenset[str]], skip: str | None = None) -> list[dict[str, Any]]:
    return [facet_clause(store, k, v) for k, v in facets.items() if v and k != skip]


_PATHS: dict[tuple[int, str], frozenset[str]] = {}


def known_paths(store: Store, collection: str) -> frozenset[str]:
    """Every dotted path some document of ``collection`` holds (objects inside arrays included), once per store."""
    key = (id(store), collection)
    if key not in _PATHS:
        paths: set[str] = set()

        def walk(value: Any, prefix: str) -> None:
            if isinstance(value, dict):
                for name, inner in value.items():
                    path = f"{prefix}.{name}" if prefix else str(name)
                    paths.add(path)
                    walk(inner, path)
            elif isinstance(value, list):
                for inner in value:
                    walk(inner, prefix)

        for doc in store.find(collection):
            walk({k: v for k, v in doc.items() if k != "_id"}, "")
        _PATHS[key] = frozenset(paths)
    return _PATHS[key]


def close_paths(path: str, known: frozenset[str], n: int = 3) -> list[str]:
    """The known paths nearest a misspelt one (difflib, case folded first)."""
    import difflib

    folded = {p.casefold(): p for p in known}
    if path.casefold() in folded:
        return [folded[path.casefold()]]
    return [folded[m] for m in difflib.get_close_matches(path.casefold(), list(folded), n=n, cutoff=0.5)]


def check_fields(store: Store, collection: str, paths: Iterable[str]) -> None:
    """Refuse a field no document of the collection has (it would silently match nothing), naming the closest."""
    known = known_paths(store, collection)
    for path in paths:
        if path not in known:
            near = close_paths(path, known)
            hint = f": did you mean {' or '.join(near)}?" if near else ""
            if not near:
                elsewhere = [c for c in FIELDS if c != collection and path in known_paths(store, c)]
                hint = f": it is a field of {' and '.join(elsewhere)}" if elsewhere else ""
            raise QueryError(f"no field {path!r} in {collection}{hint}")


def split_pair(text: str) -> tuple[str, str] | None:
    """``path=regex`` or ``path~regex`` typed in one box, as the pair (None: no separator)."""
    match = re.match(r"\s*([^=~\s][^=~]*?)\s*[=~]\s*(.+)$", text)
    return (match.group(1), match.group(2)) if match else None


def _base_clauses(store: Store, request: SearchRequest) -> list[dict[str, Any]]:
    """The field query (and keywords) as image filters; raises QueryError on bad input."""
    flt = field_filter(request.pairs)
    check_fields(store, request.collection, (p for p, _ in request.pairs))
    if not flt:
        clauses: list[dict[str, Any]] = []
    elif request.collection == CASES:
        uids = [d["U_id"] for d in store.find(CASES, flt, projection=["U_id"])]
        clauses = [{"U_id": {"$in": uids}}]
    elif request.collection == REPORTS:
        clauses = [{"image": {"$in": [d["image"] for d in store.find(REPORTS, flt, projection=["image"])]}}]
    else:
        clauses = [flt]
    if request.within:
        clauses.append({"image": {"$in": list(request.within)}})
    if request.active_keywords:
        hits = store.keyword_search(request.active_keywords, flt=and_filters(*clauses) or None, limit=0)
        clauses = [{"image": {"$in": [d["image"] for _, d in hits]}}]
    return clauses


def run_search(store: Store, request: SearchRequest, *, snippet_rows: int = SNIPPET_ROWS) -> SearchResult:
    """The images a request selects; raises QueryError for a bad regex or keyword text.

    With keywords, the snippets of the first ``snippet_rows`` images come along (the
    rest when asked, :func:`fill_snippets`), so a keystroke never waits for all of them.
    """
    base = _base_clauses(store, request)
    docs = store.find(IMAGES, and_filters(*base, *_facet_clauses(store, request.facets)))
    ranked = bool(request.active_keywords or request.within)
    if ranked:
        order = {name: i for i, name in enumerate(base[-1]["image"]["$in"])}
        docs.sort(key=lambda d: order[d["image"]])
    result = SearchResult(request, docs, tuple(base), ranked)
    if result.keywords and snippet_rows:
        fill_snippets(store, result, result.names[:snippet_rows])
    return result


def fill_snippets(store: Store, result: SearchResult, names: list[str]) -> dict[str, str]:
    """Find (once) where the keywords hit in these images of ``result``; returns all known so far."""
    missing = [n for n in names if n not in result.snippets]
    if result.keywords and missing:
        found = store.search_index().snippets(result.keywords, missing)
        result.snippets.update({n: found.get(n, "") for n in missing})
    return result.snippets


def highlight_pattern(keywords: str) -> str | None:
    """A regex marking the searched words in shown text (None: no usable keywords)."""
    if not keywords.strip() or not_yet_searchable(keywords) is not None:
        return None
    try:
        return parse_keywords(keywords).highlight_pattern()
    except QueryError:
        return None


def count_facets(store: Store, result: SearchResult) -> dict[str, collections.Counter[str]]:
    """Live counts per facet value: each facet counted under every filter but its own.

    Counting a facet without its own selection keeps its other values visible, so ticking
    "CT" still shows how many MR images the rest of the query would give.
    """
    facets = result.request.facets
    own = [f for f in FACETS if facets.get(f.key)]
    shared = [f for f in FACETS if not facets.get(f.key)]
    counts: dict[str, collections.Counter[str]] = {}
    groups = [(shared, None)] + [([f], f.key) for f in own]
    for group, skip in groups:
        if not group:
            continue
        flt = and_filters(*result.base, *_facet_clauses(store, facets, skip))
        raw = store.facet_counts(IMAGES, flt, sorted({f.path for f in group}))
        for f in group:
            counts[f.key] = _values(store, f, raw[f.path])
    return counts


def _values(store: Store, facet: Facet, raw: collections.Counter[Any]) -> collections.Counter[str]:
    """Raw path counts as the facet's values (age ranges, splits), without missing values."""
    out: collections.Counter[str] = collections.Counter()
    cleaner = _cleaner(facet)
    for value, n in raw.items():
        if facet.key == "age":
            value = age_range(value)
        elif facet.key == "split":
            value = store.split_of(value)
        elif cleaner is not None:
            value = _clean_value(cleaner, value)
        if value not in (None, ""):
            out[str(value)] += n
    return out


def facet_order(key: str, counts: collections.Counter[str]) -> list[str]:
    """The order a facet lists its values in: natural for ages and splits, else by count."""
    if key == "age":
        return [v for v in AGE_RANGES if v in counts]
    if key == "split":
        return [v for v in SPLIT_ORDER if v in counts] + sorted(v for v in counts if v not in SPLIT_ORDER)
    return sorted(counts, key=lambda v: (-counts[v], v))


def case_titles(store: Store) -> dict[str, str]:
    """U_id -> the case's diagnosis (or title), for the results table."""
    docs = store.find(CASES, projection=["U_id", "Case.Case Diagnosis", "Case.Title"])
    return {d["U_id"]: (d.get("Case") or {}).get("Case Diagnosis") or (d.get("Case") or {}).get("Title") or ""
            for d in docs}
