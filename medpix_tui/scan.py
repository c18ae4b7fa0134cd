"""Evaluate validated filters over an immutable in-memory snapshot of a collection.

mongita 1.2 answers ``$or``/``$and`` and falsy nested values wrongly and raises on most
other operators, so it only stores documents and serves lookups by indexed id. Filters run
here instead, in three steps:

1. top-level string equalities narrow the candidates through a column index;
2. every ``$regex`` leaf is matched with the ``regex`` module under a deadline (a
   catastrophic pattern becomes a :class:`~medpix_tui.errors.QueryError`, not a hang) and
   replaced by a boolean flag;
3. whatever remains goes to mongomock's implementation of MongoDB query semantics.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import count
from typing import Any

from mongomock import filtering
from sentinels import NOTHING

from .errors import QueryError
from .query import REGEX_TIME_LIMIT, RegexMatcher, compile_regex

_FLAG = "__medpix_regex_"


class _Matcher(filtering._Filterer):
    """mongomock's matcher, with MongoDB's ``$size`` (arrays only: mongomock counts a non-empty scalar as size 1)."""

    def __init__(self) -> None:
        super().__init__()
        self._operator_map["$size"] = lambda value, size: isinstance(value, (list, tuple)) and len(value) == size


_MATCHER = _Matcher()


def values_at(doc: dict[str, Any], path: str) -> Iterator[Any]:
    """Values at a dotted path as MongoDB sees them (array elements included)."""
    for value in filtering.iter_key_candidates(path, doc):
        if value is NOTHING:
            continue
        if isinstance(value, list):
            yield from value
        yield value


class Snapshot:
    """The documents of one collection, with lazily built column indexes."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self._columns: dict[str, dict[Any, list[int]] | None] = {}

    def column(self, path: str) -> dict[Any, list[int]] | None:
        """value -> document indices for a path whose values are all scalar strings; else None."""
        if path not in self._columns:
            index: dict[Any, list[int]] | None = {}
            for i, doc in enumerate(self.docs):
                found = list(filtering.iter_key_candidates(path, doc))
                if len(found) != 1 or isinstance(found[0], (list, dict)):
                    index = None
                    break
                value = found[0]
                if value is NOTHING or value is None:
                    continue
                if not isinstance(value, str):
                    index = None
                    break
                index.setdefault(value, []).append(i)
            self._columns[path] = index
        return self._columns[path]

    def select(self, flt: dict[str, Any]) -> list[int]:
        """Indices of the documents matching a validated filter, in snapshot order."""
        deadline = time.monotonic() + REGEX_TIME_LIMIT
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
        idx = range(len(self.docs)) if candidates is None else candidates
        for path, matcher, negate in regex_leaves:
            idx = [i for i in idx if negate != any(isinstance(v, str) and matcher.search(v) for v in values_at(self.docs[i], path))]
        if not residual:
            return list(idx)
        flags: list[tuple[str, str, RegexMatcher]] = []
        rewritten = _rewrite({"$and": residual} if len(residual) > 1 else residual[0], flags, deadline, count())
        if _untimed_regex(rewritten):
            raise QueryError("$regex inside $elemMatch, or inside $not beside other operators, is not supported here: "
                             "{field: {\"$regex\": ...}} already matches any element of an array")
        out = []
        for i in idx:
            doc = self.docs[i]
            if flags:
                doc = dict(doc)
                for key, path, matcher in flags:
                    doc[key] = any(isinstance(v, str) and matcher.search(v) for v in values_at(doc, path))
            if _MATCHER.apply(rewritten, doc):
                out.append(i)
        return out

    def _equality(self, clause: dict[str, Any]) -> list[int] | None:
        """Candidates for ``{path: "text"}``, ``{path: {"$eq": "text"}}`` or ``{path: {"$in": [...]}}``."""
        if len(clause) != 1:
            return None
        (path, cond), = clause.items()
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
        return sorted({i for v in values for i in column.get(v, ())})


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


def _regex_leaf(clause: dict[str, Any], deadline: float) -> tuple[str, RegexMatcher, bool, dict | None] | None:
    """``{path: {"$regex": p, ...rest}}`` -> (path, matcher, negated, ``{path: rest}`` or None).

    ``{path: {"$not": {"$regex": p}}}`` alone is a negated leaf.
    """
    (path, cond), = clause.items()
    if path.startswith("$") or not isinstance(cond, dict):
        return None
    inner = cond.get("$not")
    if len(cond) == 1 and isinstance(inner, dict) and "$regex" in inner and set(inner) <= {"$regex", "$options"}:
        return path, RegexMatcher(compile_regex(inner["$regex"], inner.get("$options", "")), deadline), True, None
    if "$regex" not in cond:
        return None
    matcher = RegexMatcher(compile_regex(cond["$regex"], cond.get("$options", "")), deadline)
    rest = {k: v for k, v in cond.items() if k not in ("$regex", "$options")}
    return path, matcher, False, ({path: rest} if rest else None)


def _untimed_regex(flt: Any) -> bool:
    """True when a ``$regex`` is left that mongomock would run with ``re``, without a time limit."""
    if isinstance(flt, dict):
        return "$regex" in flt or any(_untimed_regex(v) for v in flt.values())
    if isinstance(flt, list):
        return any(_untimed_regex(v) for v in flt)
    return False


def _rewrite(flt: Any, flags: list, deadline: float, ids: Iterator[int]) -> Any:
    """Replace nested regex conditions by flag fields evaluated with a time limit."""
    if not isinstance(flt, dict):
        return flt
    out: dict[str, Any] = {}
    extra: list[dict[str, Any]] = []
    for key, value in flt.items():
        if key in ("$and", "$or", "$nor"):
            out[key] = [_rewrite(sub, flags, deadline, ids) for sub in value]
            continue
        if not isinstance(value, dict) or key.startswith("$"):
            out[key] = value
            continue
        cond = dict(value)
        rewritten = False
        if "$regex" in cond:
            rewritten = True
            flag = f"{_FLAG}{next(ids)}"
            flags.append((flag, key, RegexMatcher(compile_regex(cond.pop("$regex"), cond.pop("$options", "")), deadline)))
            extra.append({flag: True})
        inner = cond.get("$not")
        if isinstance(inner, dict) and set(inner) <= {"$regex", "$options"} and "$regex" in inner:
            flag = f"{_FLAG}{next(ids)}"
            flags.append((flag, key, RegexMatcher(compile_regex(inner["$regex"], inner.get("$options", "")), deadline)))
            extra.append({flag: {"$ne": True}})
            del cond["$not"]
            rewritten = True
        if cond or not rewritten:
            out[key] = cond
    if extra:
        return {"$and": [out, *extra]} if out else (extra[0] if len(extra) == 1 else {"$and": extra})
    return out


def sort_indices(docs: list[dict[str, Any]], indices: list[int], keys: list[tuple[str, int]]) -> list[int]:
    """Sort like MongoDB (mongomock's BSON ordering), stable, last key first."""
    out = list(indices)
    for path, direction in reversed(keys):
        out.sort(key=lambda i: filtering.resolve_sort_key(path, docs[i]), reverse=direction < 0)
    return out
