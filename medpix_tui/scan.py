"""Evaluate validated filters over an immutable in-memory snapshot of a collection.

mongita 1.2 answers ``$or``/``$and`` and falsy nested values wrongly and raises on most
other operators, so it only stores documents and serves lookups by indexed id. Filters run
here instead, in three steps:

1. top-level string equalities (and ``$or``s of them) narrow the candidates through a
   column index;
2. every ``$regex`` leaf is matched with the ``regex`` module under a deadline (a
   catastrophic pattern becomes a :class:`~medpix_tui.errors.QueryError`, not a hang): a
   top-level leaf on a string column once per distinct value, a nested one through a
   boolean flag; null conditions become flags too (:func:`null_or_missing`);
3. whatever remains goes to mongomock's implementation of MongoDB query semantics, through
   its public functions only (:func:`mongo_matches`, :func:`key_candidates`, :func:`sort_key`;
   ``tests/test_scan.py`` pins what this module relies on), with ``$size`` computed here
   (mongomock counts a non-empty scalar as an array of size 1).

Sorting ranks each sort path's values once, in BSON order, and then sorts integers; a
numeric field (a number written as text, such as ``Description.Age``) sorts as numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import cache
from itertools import count
from typing import Any

from .errors import QueryError
from .query import FILTER_TIME_LIMIT, REGEX_TIME_LIMIT, RegexMatcher, work_clock

_FLAG = "__medpix_flag_"
#: Computed fields a rewritten filter tests: (field name, how to compute it from a document).
Flags = list[tuple[str, Callable[[dict[str, Any]], bool]]]


@cache
def _filtering() -> Any:
    """mongomock's query semantics, imported on first use (with pymongo and sentinels: a tenth of a second)."""
    from mongomock import filtering

    return filtering


def mongo_matches(flt: dict[str, Any], doc: dict[str, Any]) -> bool:
    """MongoDB's matching of one document (mongomock's public ``filter_applies``)."""
    return bool(_filtering().filter_applies(flt, doc))


def key_candidates(doc: dict[str, Any], path: str) -> Iterator[Any]:
    """The values a dotted path reaches through objects and arrays, as MongoDB walks it (missing ones left out)."""
    filtering = _filtering()
    return (v for v in filtering.iter_key_candidates(path, doc) if v is not filtering.NOTHING)


def values_at(doc: dict[str, Any], path: str) -> Iterator[Any]:
    """Values at a dotted path as MongoDB sees them (array elements included)."""
    for value in key_candidates(doc, path):
        if isinstance(value, list):
            yield from value
        yield value


def as_number(value: Any) -> float | None:
    """A number, or a number written as text (``" 42"``), as a float; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if number == number and abs(number) != float("inf") else None
    return None


def sort_key(path: str, doc: dict[str, Any], numeric: bool = False) -> Any:
    """A document's key for sorting by ``path`` in MongoDB's (BSON) order.

    With ``numeric``, text holding a number sorts as that number (so age 9 comes before 89);
    other values keep their place in BSON order (null first, numbers before text).
    """
    resolve = _filtering().resolve_sort_key
    if numeric:
        number = as_number(next(iter(key_candidates(doc, path)), None))
        if number is not None:
            return resolve("n", {"n": number})
    return resolve(path, doc)


def sort_documents(docs: list[dict[str, Any]], keys: list[tuple[str, int]],
                   numeric: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Sort documents like :meth:`Snapshot.sort` (stable, last key first), for a backend without a snapshot."""
    out = list(docs)
    for path, direction in reversed(keys):
        out.sort(key=lambda doc: sort_key(path, doc, path in numeric), reverse=direction < 0)
    return out


_NOT_A_COLUMN = object()
_MISSING = object()


def _column_value(doc: dict[str, Any], parts: list[str]) -> Any:
    """The string (or None: missing or null) at a path through plain objects, else ``_NOT_A_COLUMN``.

    An array or scalar on the way, or an array or non-string at the end, makes the path
    no column, so it keeps the general evaluation (a missing object on the way reads as a
    missing value, as mongomock reads it).
    """
    value: Any = doc
    for part in parts:
        if not isinstance(value, dict):
            return _NOT_A_COLUMN
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return None
    return value if value is None or isinstance(value, str) else _NOT_A_COLUMN


class Column:
    """A path whose value is, in every document, one string or nothing: per document and per value."""

    def __init__(self, values: list[str | None]) -> None:
        self.values = values
        self.rows: dict[str, list[int]] = {}
        for i, value in enumerate(values):
            if value is not None:
                self.rows.setdefault(value, []).append(i)

    def matching(self, matcher: RegexMatcher, negate: bool, idx: Iterable[int]) -> list[int]:
        """The rows of ``idx`` whose value matches (or, negated, does not match) ``matcher``.

        Few candidates are matched one by one; otherwise each distinct value is matched once.
        """
        idx = list(idx)
        if len(idx) <= len(self.rows):
            values = self.values
            return [i for i in idx if negate != ((value := values[i]) is not None and matcher.search(value))]
        hits = {i for value, rows in self.rows.items() if matcher.search(value) for i in rows}
        return [i for i in idx if (i in hits) != negate]


class Snapshot:
    """The documents of one collection, with lazily built column indexes and sort ranks."""

    def __init__(self, docs: list[dict[str, Any]], numeric: frozenset[str] = frozenset()) -> None:
        self.docs = docs
        self.numeric = numeric
        self._columns: dict[str, Column | None] = {}
        self._ranks: dict[str, list[int]] = {}

    def column(self, path: str) -> Column | None:
        """The path's :class:`Column` when its values are all scalar strings (or missing); else None."""
        if path not in self._columns:
            parts = path.split(".")
            values: list[str | None] = []
            for doc in self.docs:
                value = _column_value(doc, parts)
                if value is _NOT_A_COLUMN:
                    self._columns[path] = None
                    return None
                values.append(value)
            self._columns[path] = Column(values)
        return self._columns[path]

    def sort(self, indices: list[int], keys: list[tuple[str, int]]) -> list[int]:
        """Sort like MongoDB (mongomock's BSON ordering), stable, last key first."""
        out = list(indices)
        for path, direction in reversed(keys):
            out.sort(key=self._rank(path).__getitem__, reverse=direction < 0)
        return out

    def _rank(self, path: str) -> list[int]:
        """Per document, the rank of its sort key at ``path`` among all documents (ties share a rank)."""
        if path not in self._ranks:
            numeric = path in self.numeric
            keys = [sort_key(path, doc, numeric) for doc in self.docs]
            order = sorted(range(len(keys)), key=keys.__getitem__)
            ranks = [0] * len(keys)
            rank = 0
            for n, i in enumerate(order):
                if n and keys[order[n - 1]] < keys[i]:
                    rank += 1
                ranks[i] = rank
            self._ranks[path] = ranks
        return self._ranks[path]

    def select(self, flt: dict[str, Any]) -> list[int]:
        """Indices of the documents matching a validated filter, in snapshot order."""
        deadline = work_clock() + REGEX_TIME_LIMIT  # CPU seconds of this thread, where matching runs
        stop_at = work_clock() + FILTER_TIME_LIMIT
        conjuncts = _conjuncts(flt)
        candidates: list[int] | None = None
        residual: list[dict[str, Any]] = []
        regex_leaves: list[tuple[str, RegexMatcher, bool]] = []
        for clause in conjuncts:
            narrowed = self._equality(clause)
            if narrowed is not None:
                candidates = narrowed if candidates is None else sorted(set(candidates) & set(narrowed))
                continue
            leaf = _regex_leaf(clause, deadline)
            if leaf is not None:
                regex_leaves.append(leaf[:3])
                if leaf[3]:
                    residual.append(leaf[3])
                continue
            residual.append(clause)
        idx: Iterable[int] = range(len(self.docs)) if candidates is None else candidates
        for path, matcher, negate in regex_leaves:
            column = self.column(path)
            if column is not None:
                idx = column.matching(matcher, negate, idx)
            else:
                test = _regex_test(path, matcher)
                idx = [i for i in idx if negate != test(self.docs[i])]
        if not residual:
            return list(idx)
        flags: Flags = []
        rewritten = _rewrite({"$and": residual} if len(residual) > 1 else residual[0], flags, deadline, count())
        if _uses(rewritten, "$regex"):  # left for mongomock, which would run it with re, without a time limit
            raise QueryError("$regex inside $elemMatch is not supported here: "
                             "{field: {\"$regex\": ...}} already matches any element of an array")
        out = []
        for n, i in enumerate(idx):
            if not n % 16 and work_clock() > stop_at:
                raise QueryError(f"filter took longer than {FILTER_TIME_LIMIT:g} s; simplify it")
            if _apply(rewritten, flags, self.docs[i]):
                out.append(i)
        return out

    def _equality(self, clause: dict[str, Any]) -> list[int] | None:
        """Candidates for ``{path: "text"}``, ``{path: {"$eq": "text"}}``, ``{path: {"$in": [...]}}``, or an ``$or``."""
        if len(clause) != 1:
            return None
        (path, cond), = clause.items()
        if path == "$or":
            parts = [self._equality(sub) for sub in cond]
            hits: set[int] = set()
            for part in parts:
                if part is None:
                    return None
                hits.update(part)
            return sorted(hits)
        if path.startswith("$"):
            return None
        if isinstance(cond, dict) and len(cond) == 1 and "$eq" in cond:
            cond = cond["$eq"]
        if isinstance(cond, dict) and len(cond) == 1 and "$in" in cond and all(isinstance(v, str) for v in cond["$in"]):
            values = cond["$in"]
        elif isinstance(cond, str):
            values = [cond]
        else:
            return None
        column = self.column(path)
        if column is None:
            return None
        return sorted({i for v in values for i in column.rows.get(v, ())})


def _conjuncts(flt: dict[str, Any]) -> list[dict[str, Any]]:
    """Split a filter into its top-level ANDed clauses (flattening ``$and``)."""
    out: list[dict[str, Any]] = []
    for key, value in flt.items():
        if key == "$and":
            for sub in value:
                out.extend(_conjuncts(sub))
        else:
            out.append({key: value})
    return out


def _regex_leaf(clause: dict[str, Any],
                deadline: float) -> tuple[str, RegexMatcher, bool, dict[str, Any] | None] | None:
    """``{path: {"$regex": p, ...rest}}`` -> (path, matcher, negated, ``{path: rest}`` or None).

    ``{path: {"$not": {"$regex": p}}}`` alone is a negated leaf.
    """
    (path, cond), = clause.items()
    if path.startswith("$") or not isinstance(cond, dict):
        return None
    inner = cond.get("$not")
    if len(cond) == 1 and isinstance(inner, dict) and "$regex" in inner and set(inner) <= {"$regex", "$options"}:
        return path, RegexMatcher.compile(inner["$regex"], inner.get("$options", ""), deadline), True, None
    if "$regex" not in cond:
        return None
    matcher = RegexMatcher.compile(cond["$regex"], cond.get("$options", ""), deadline)
    rest = {k: v for k, v in cond.items() if k not in ("$regex", "$options")}
    return path, matcher, False, ({path: rest} if rest else None)


def _uses(flt: Any, op: str) -> bool:
    """True when the operator ``op`` stands anywhere in the filter."""
    if isinstance(flt, dict):
        return op in flt or any(_uses(v, op) for v in flt.values())
    if isinstance(flt, list):
        return any(_uses(v, op) for v in flt)
    return False


def _apply(rewritten: dict[str, Any], flags: Flags, doc: dict[str, Any]) -> bool:
    """Whether ``doc`` matches a filter :func:`_rewrite` produced, its flags computed first."""
    if flags:
        doc = dict(doc)
        for key, test in flags:
            doc[key] = test(doc)
    return mongo_matches(rewritten, doc)


def _matches(flt: dict[str, Any], doc: dict[str, Any], deadline: float) -> bool:
    """One document against a validated filter, with this module's regex, null and ``$size`` semantics."""
    flags: Flags = []
    return _apply(_rewrite(flt, flags, deadline, count()), flags, doc)


def _size_test(path: str, size: Any) -> Callable[[dict[str, Any]], bool]:
    """MongoDB's ``$size``: some array at the path has exactly ``size`` elements (a scalar never matches)."""
    return lambda doc: any(isinstance(v, list) and len(v) == size for v in key_candidates(doc, path))


def _elem_match_test(path: str, query: dict[str, Any], deadline: float) -> Callable[[dict[str, Any]], bool]:
    """``{path: {"$elemMatch": query}}`` evaluated here, for a query mongomock would read wrongly (``$size``).

    A query of operators applies to each element itself, a query of fields to each object element.
    """
    on_value = all(k.startswith("$") for k in query)

    def element(item: Any) -> bool:
        if on_value:
            return _matches({"v": query}, {"v": item}, deadline)
        return isinstance(item, dict) and _matches(query, item, deadline)
    return lambda doc: any(isinstance(arr, list) and any(element(e) for e in arr) for arr in key_candidates(doc, path))


def _regex_test(path: str, matcher: RegexMatcher) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: any(isinstance(v, str) and matcher.search(v) for v in values_at(doc, path))


def _null_test(path: str) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: null_or_missing(doc, path)


def null_or_missing(doc: dict[str, Any], path: str) -> bool:
    """MongoDB's ``{path: null}``: the path leads to no value, or to a null (or an array holding one).

    mongomock finds no candidate at all, rather than a missing one, where a path runs through
    a string or past the end of an array (``Type.x``, ``TAC.0`` of an empty list), so
    ``{"TAC.0": null}`` would match nothing; this walk follows MongoDB instead.
    """
    values: list[Any] = [doc]
    for part in path.split("."):
        found: list[Any] = []
        for value in values:
            if isinstance(value, dict):
                if part in value:
                    found.append(value[part])
            elif isinstance(value, list):
                if part.isdigit() and int(part) < len(value):
                    found.append(value[int(part)])
                else:
                    found += [e[part] for e in value if isinstance(e, dict) and part in e]
        values = found
    return not values or any(v is None or (isinstance(v, list) and None in v) for v in values)


def _rewrite(flt: Any, flags: Flags, deadline: float, ids: Iterator[int]) -> Any:
    """Replace nested regex, null and ``$size`` conditions by flag fields that :meth:`Snapshot.select` computes.

    ``$not`` (and ``$ne``/``$nin`` holding null) becomes ``$nor`` of the positive condition,
    so what it negates is rewritten too.
    """
    if not isinstance(flt, dict):
        return flt
    out: dict[str, Any] = {}
    extra: list[dict[str, Any]] = []

    def flag(test: Callable[[dict[str, Any]], bool]) -> str:
        name = f"{_FLAG}{next(ids)}"
        flags.append((name, test))
        return name

    for key, value in flt.items():
        if key in ("$and", "$or", "$nor"):
            out[key] = [_rewrite(sub, flags, deadline, ids) for sub in value]
            continue
        if key.startswith("$"):
            out[key] = value
            continue
        if value is None:
            extra.append({flag(_null_test(key)): True})
            continue
        if not isinstance(value, dict):
            out[key] = value
            continue
        cond = dict(value)
        rewritten = False
        if "$regex" in cond:
            rewritten = True
            matcher = RegexMatcher.compile(cond.pop("$regex"), cond.pop("$options", ""), deadline)
            extra.append({flag(_regex_test(key, matcher)): True})
        if "$size" in cond:
            extra.append({flag(_size_test(key, cond.pop("$size"))): True})
            rewritten = True
        if "$elemMatch" in cond and isinstance(cond["$elemMatch"], dict) and _uses(cond["$elemMatch"], "$size"):
            extra.append({flag(_elem_match_test(key, cond.pop("$elemMatch"), deadline)): True})
            rewritten = True
        # {path: {$not: c}} is {$nor: [{path: c}]}, and $ne/$nin are $not of $eq/$in: the negated
        # condition gets the same rewriting (only $ne/$nin holding null need it)
        negated = [cond.pop("$not")] if "$not" in cond else []
        for op, positive in (("$ne", "$eq"), ("$nin", "$in")):
            if op in cond and (cond[op] is None or (isinstance(cond[op], list) and None in cond[op])):
                negated.append({positive: cond.pop(op)})
        for inner in negated:
            extra.append({"$nor": [_rewrite({key: inner}, flags, deadline, ids)]})
            rewritten = True
        if "$eq" in cond and cond["$eq"] is None:
            del cond["$eq"]
            extra.append({flag(_null_test(key)): True})
            rewritten = True
        for op in ("$in", "$all"):  # {$in: [null, v]} is null or v; {$all: [null, v]} is null and v
            if op in cond and None in cond[op]:
                rest = [v for v in cond.pop(op) if v is not None]
                null = {flag(_null_test(key)): True}
                if op == "$in":
                    extra.append({"$or": [null, {key: {"$in": rest}}]} if rest else null)
                else:
                    extra.append(null)
                    if rest:
                        cond["$all"] = rest
                rewritten = True
        if cond or not rewritten:
            out[key] = cond
    if extra:
        return {"$and": [out, *extra]} if out else (extra[0] if len(extra) == 1 else {"$and": extra})
    return out
