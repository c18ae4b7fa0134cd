"""Queries as users write them, checked before they reach any engine.

Three kinds of query, all compiled to one validated MongoDB-style filter:

* the authors' GUI query: ``{dotted.path: regex}`` pairs, each a case-insensitive regex,
  all ANDed (:func:`field_filter`);
* a raw JSON filter restricted to read-only operators (:func:`validate_filter`);
* a ranked keyword search (:mod:`medpix_tui.search`).

Regexes are compiled here with the ``regex`` module so that a catastrophic pattern hits a
time limit instead of hanging the process (:class:`RegexMatcher`).

Limits, each refused with one line (exit 2): a JSON filter of at most
:data:`MAX_FILTER_BYTES` bytes and :data:`MAX_FILTER_NODES` conditions, nested at most
:data:`MAX_DEPTH` levels, regexes of :data:`MAX_PATTERN` characters; a filter is
evaluated within :data:`FILTER_TIME_LIMIT` seconds, its regexes within
:data:`REGEX_TIME_LIMIT`.
"""

from __future__ import annotations

import json
import math
import operator
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import regex

from .errors import QueryError

#: Operators a filter may use: all read-only, none runs code on the server.
ALLOWED_OPERATORS = frozenset({
    "$eq", "$ne", "$in", "$nin", "$gt", "$gte", "$lt", "$lte", "$regex", "$options",
    "$and", "$or", "$nor", "$not", "$exists", "$size", "$all", "$elemMatch",
})
LOGICAL = ("$and", "$or", "$nor")
_READ_ONLY_HINT = f"read-only operators only: {', '.join(sorted(ALLOWED_OPERATORS))}"
REGEX_OPTIONS = frozenset("imsx")
MAX_PATTERN = 1000
MAX_DEPTH = 20
MAX_LIMIT = 100_000
#: Bytes of a JSON filter typed by a user, and conditions (objects, lists, keys) of any filter.
MAX_FILTER_BYTES = 32_768
MAX_FILTER_NODES = 5_000
#: Seconds the evaluation of one filter over a collection may take.
FILTER_TIME_LIMIT = 10.0
_INT64 = (-(2**63), 2**63 - 1)
#: Seconds all regex matching of one query may take before it is refused.
REGEX_TIME_LIMIT = 2.0
_FIELD_PATH = re.compile(r"^[^$.\s][^$]*$")


def work_clock() -> float:
    """The clock the filter and regex limits read: this thread's CPU seconds. A runaway regex
    burns CPU; wall time would also count what other processes take from a loaded host, and
    refused harmless queries there (seen on 2 shared cores)."""
    return time.thread_time()


def _check_path(path: object) -> str:
    if not isinstance(path, str) or not _FIELD_PATH.match(path) or ".." in path or path.endswith("."):
        raise QueryError(f"invalid field path {str(path)[:60]!r}: use dotted names such as Description.Caption")
    return path


#: The largest count one ``{n}`` / ``{n,m}`` repeat may name, and the largest product of all of a
#: pattern's counts (nested repeats multiply): ``a{99999999}`` compiled at 65 MB/s until the TUI
#: was killed at 16 GB, ``a{1000000}`` took 0.8 s and 310 MB; 100,000 repeats cost ~30 MB.
MAX_REPEAT = 1000
MAX_REPEAT_PRODUCT = 100_000
_REPEAT = re.compile(r"(?<!\\)\{(\d+)(?:,(\d*))?\}")


def _check_repeats(pattern: str) -> None:
    """Refuse, before compiling, a pattern whose counted repeats would compile to a huge program."""
    product = 1
    for low, high in _REPEAT.findall(pattern):
        count = max(int(low[:12]), int(high[:12] or 0))
        if count > MAX_REPEAT:
            raise QueryError(f"regex {pattern[:60]!r} repeats {count:,} times; at most {MAX_REPEAT:,} a repeat")
        product = min(product * max(count, 1), MAX_REPEAT_PRODUCT + 1)
    if product > MAX_REPEAT_PRODUCT:
        raise QueryError(f"regex {pattern[:60]!r}: its repeats multiply to more than {MAX_REPEAT_PRODUCT:,}")


def compile_regex(pattern: object, options: object = "") -> regex.Pattern:
    """Compile a user regex with MongoDB options; one clear error when it is invalid or its
    repeats would compile to a program of gigabytes (:data:`MAX_REPEAT`)."""
    if not isinstance(pattern, str):
        raise QueryError(f"$regex must be a string, got {type(pattern).__name__}")
    if not isinstance(options, str) or not set(options) <= REGEX_OPTIONS:
        raise QueryError(f"invalid $options {str(options)[:20]!r}: use letters from 'imsx'")
    if len(pattern) > MAX_PATTERN:
        raise QueryError(f"regex too long ({len(pattern)} characters, limit {MAX_PATTERN})")
    _check_repeats(pattern)
    flags = regex.V0
    for letter, flag in (("i", regex.IGNORECASE), ("m", regex.MULTILINE), ("s", regex.DOTALL), ("x", regex.VERBOSE)):
        if letter in options:
            flags |= flag
    try:
        with warnings.catch_warnings():  # re's FutureWarnings ("possible nested set") are not for users
            warnings.simplefilter("ignore")
            compiled = regex.compile(pattern, flags)
            re.compile(pattern)  # a pattern must also mean the same to Python's re and to MongoDB
    except (regex.error, re.error, ValueError, OverflowError) as exc:  # regex raises ValueError for (?V1), (?au)
        raise QueryError(f"invalid regex {pattern[:60]!r}: {exc}") from None
    except RecursionError:
        raise QueryError(f"invalid regex {pattern[:60]!r}: nested too deeply") from None
    return compiled


def _check_operand(op: str, value: Any, depth: int) -> None:
    if op in ("$in", "$nin", "$all") and not isinstance(value, list):
        raise QueryError(f"{op} needs a list, got {type(value).__name__}")
    if op == "$size" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise QueryError("$size needs a non-negative integer")
    if op == "$exists" and not isinstance(value, (bool, int)):
        raise QueryError("$exists needs true or false")
    if op in ("$eq", "$ne", "$in", "$nin", "$all", "$gt", "$gte", "$lt", "$lte"):
        _check_plain(value, depth + 1)
    if op == "$elemMatch":
        if not isinstance(value, dict):
            raise QueryError("$elemMatch needs an object")
        _validate(value, depth + 1, in_elem_match=True)
    if op == "$not":
        if isinstance(value, dict) and value:
            _validate_operators(value, depth + 1)
        else:
            raise QueryError("$not needs an operator object such as {\"$regex\": \"...\"}")


def _validate_operators(spec: dict[str, Any], depth: int) -> None:
    """``spec`` is the value of a field condition that starts with operators."""
    for op, value in spec.items():
        if not isinstance(op, str) or not op.startswith("$"):
            raise QueryError(f"cannot mix operators and plain fields in one condition ({str(op)[:40]!r})")
        if op not in ALLOWED_OPERATORS or op in LOGICAL:
            raise QueryError(f"operator {op} is not allowed ({_READ_ONLY_HINT})")
        _check_operand(op, value, depth)
    if "$options" in spec and "$regex" not in spec:
        raise QueryError("$options needs $regex")
    if "$regex" in spec:
        compile_regex(spec["$regex"], spec.get("$options", ""))


def _validate(flt: Any, depth: int = 0, in_elem_match: bool = False) -> None:
    if depth > MAX_DEPTH:
        raise QueryError(f"filter nested deeper than {MAX_DEPTH} levels")
    if not isinstance(flt, dict):
        raise QueryError(f"a filter must be a JSON object, got {type(flt).__name__}")
    for key, value in flt.items():
        if not isinstance(key, str):
            raise QueryError("filter keys must be strings")
        if key.startswith("$"):
            if key in LOGICAL:
                if not isinstance(value, list) or not value:
                    raise QueryError(f"{key} needs a non-empty list of filters")
                for sub in value:
                    _validate(sub, depth + 1)
            elif in_elem_match and key in ALLOWED_OPERATORS:
                _check_operand(key, value, depth)
                if key == "$regex":
                    compile_regex(value, flt.get("$options", ""))
                if key == "$options" and "$regex" not in flt:
                    raise QueryError("$options needs $regex")
            else:
                raise QueryError(f"operator {key} is not allowed ({_READ_ONLY_HINT})")
            continue
        _check_path(key)
        if isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value):
            _validate_operators(value, depth + 1)
        else:
            _check_plain(value, depth + 1)


def _check_plain(value: Any, depth: int) -> None:
    """An embedded document used for equality may not hide operators in nested keys."""
    if depth > MAX_DEPTH:
        raise QueryError(f"filter nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        raise QueryError(f"integer {str(value)[:30]} out of range (64-bit integers only)")
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and k.startswith("$"):
                raise QueryError(f"operator {k} is not allowed inside an embedded document")
            _check_plain(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_plain(v, depth + 1)


def validate_filter(flt: Any) -> dict[str, Any]:
    """Return ``flt`` if it is a read-only filter; otherwise raise :class:`QueryError`."""
    _check_size(flt)
    _validate(flt)
    checked: dict[str, Any] = flt
    return checked


def _check_size(flt: Any) -> None:
    """Refuse filters of more than :data:`MAX_FILTER_NODES` objects, lists and keys, or deeper than
    :data:`MAX_DEPTH`, without recursion. Plain values in a list (a long ``$in``) are not counted."""
    stack: list[tuple[Any, int]] = [(flt, 0)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1 + (len(value) if isinstance(value, dict) else 0)
        if nodes > MAX_FILTER_NODES:
            raise QueryError(f"filter too large (more than {MAX_FILTER_NODES} conditions)")
        if depth > 2 * MAX_DEPTH + 2:  # each level of the filter is an object and often a list
            raise QueryError(f"filter nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, (dict, list, tuple)))
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value if isinstance(v, (dict, list, tuple)))


def parse_filter(text: str) -> dict[str, Any]:
    """Parse and validate a JSON filter typed by a user."""
    if len(text) > MAX_FILTER_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILTER_BYTES:
        raise QueryError(f"filter too long ({len(text.encode('utf-8', 'surrogatepass'))} bytes, "
                         f"limit {MAX_FILTER_BYTES})")
    try:
        flt = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QueryError(f"filter is not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise QueryError(f"filter nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise QueryError(f"filter is not valid JSON ({str(exc)[:80]})") from None
    return validate_filter(flt)


def field_filter(fields: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The authors' GUI query: each field matched as a case-insensitive regex, all ANDed."""
    pairs = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    clauses = []
    for path, pattern in pairs:
        _check_path(path)
        compile_regex(pattern, "i")
        clauses.append({path: {"$regex": pattern, "$options": "i"}})
    if not clauses:
        return {}
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def and_filters(*clauses: dict[str, Any]) -> dict[str, Any]:
    """AND together filters, dropping empty ones (``{}`` when none is left)."""
    kept = [c for c in clauses if c]
    if not kept:
        return {}
    return kept[0] if len(kept) == 1 else {"$and": kept}


#: Orderings that, on a field holding numbers written as text, compare the numbers.
_ORDER_OPS: dict[str, Callable[[float, float], bool]] = {
    "$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}
_NUMBER_TEXT = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def _as_number(value: Any) -> float | None:
    """``value`` as a number: an int, a float or text holding one in ASCII digits; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value.strip()) and value.strip().isascii():
        return float(value.strip())
    return None


class _NotNumeric(Exception):
    """A condition :func:`numbers_as_numbers` leaves as it is (a ``$regex``, ``$type``, ...)."""


def _holds(path: str, spec: Any, text: str | None) -> bool:
    """Whether a stored value (``text``; None when the field is missing) meets the condition
    ``spec`` as MongoDB means it, its numbers compared as numbers ("073" == 73)."""
    if not (isinstance(spec, dict) and spec and all(str(k).startswith("$") for k in spec)):
        spec = {"$eq": spec}
    number = None if text is None else _as_number(text)

    def equal(value: Any) -> bool:
        if value is None:
            return text is None
        wanted = _as_number(value)
        return (wanted is not None and number == wanted) or (isinstance(value, str) and value == text)

    for op, value in spec.items():
        if op in _ORDER_OPS:
            bound = _as_number(value)
            if bound is None:
                raise QueryError(f"{path} {op} compares numbers: {value!r} is not one")
            ok = number is not None and _ORDER_OPS[op](number, bound)
        elif op in ("$eq", "$ne"):
            ok = equal(value) == (op == "$eq")
        elif op in ("$in", "$nin") and isinstance(value, list):
            ok = any(equal(v) for v in value) == (op == "$in")
        elif op == "$not" and isinstance(value, dict):
            ok = not _holds(path, value, text)
        elif op == "$exists":
            ok = (text is not None) == bool(value)
        else:
            raise _NotNumeric(op)
        if not ok:
            return False
    return True


def numbers_as_numbers(store: Any, collection: str, flt: dict[str, Any]) -> dict[str, Any]:
    """``flt`` with each condition on a field of numbers written as text (:data:`.store.NUMERIC_FIELDS`,
    e.g. ``Description.Age``) made numeric.

    The release stores ages as text, so ``{"$gt": 9}`` matched nothing and ``{"$gt": "9"}``
    compared text ("10" < "9"). Each condition on such a field (``$gt``, ``$gte``, ``$lt``,
    ``$lte``, ``$eq``, ``$ne``, ``$in``, ``$nin``, ``$not``, ``$exists``, a plain value) is
    evaluated on the field's stored values and becomes the ``$in`` of those it holds for (the
    ``$nin`` of the others when a missing field meets it, as ``$ne`` and ``$not`` do), so every
    backend, a MongoDB server too, runs the same filter. An ordering against something that is
    not a number is a :class:`QueryError`; other operators are left as they are.
    """
    from .store import NUMERIC_FIELDS

    known: dict[str, list[str]] = {}

    def stored(path: str) -> list[str]:  # counted once per field, however many clauses name it
        if path not in known:
            counts = store.facet_counts(collection, {}, [path]).get(path) or {}
            known[path] = sorted(k for k in counts if isinstance(k, str))
        return known[path]

    def field(path: str, value: Any) -> dict[str, Any]:
        try:
            values = stored(path)
            held = [v for v in values if _holds(path, value, v)]
            if _holds(path, value, None):  # a document without the field meets it too
                return {path: {"$nin": [v for v in values if v not in held]}}
        except _NotNumeric:
            return {path: value}
        return {path: {"$in": held}}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("$and", "$or", "$nor"):
                out[key] = walk(value)
            elif key in NUMERIC_FIELDS:
                out.update(field(key, value))
            else:
                out[key] = value
        return out

    rewritten: dict[str, Any] = walk(flt)
    return rewritten


def value_at(doc: Any, path: str) -> Any:
    """The value at a dotted path through nested objects, or None."""
    for part in path.split("."):
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


def parse_field_args(args: Iterable[str]) -> list[tuple[str, str]]:
    """Parse ``PATH=REGEX`` command-line pairs."""
    pairs = []
    for arg in args:
        path, sep, pattern = arg.partition("=")
        if not sep or not path:
            raise QueryError(f"--field needs PATH=REGEX, got {arg!r}")
        pairs.append((path.strip(), pattern))
    return pairs


def parse_sort(text: str | None) -> list[tuple[str, int]]:
    """``"Description.Age,-image"`` -> ``[("Description.Age", 1), ("image", -1)]``."""
    if not text:
        return []
    keys = []
    for part in text.split(","):
        part = part.strip()
        direction = -1 if part.startswith("-") else 1
        keys.append((_check_path(part.lstrip("+-")), direction))
    return keys


def parse_projection(text: str | None) -> list[str] | None:
    """``"image,Description.Caption"`` -> a list of dotted paths to keep."""
    if text is None:
        return None
    paths = [_check_path(p.strip()) for p in text.split(",") if p.strip()]
    if not paths:
        raise QueryError("--fields-out names no field: give dotted fields, e.g. image,Description.Caption")
    return paths


def check_projection(store: Any, collection: str, paths: list[str] | None) -> None:
    """Refuse a field to keep that no document of ``collection`` has: a typo (``--fields-out nope``)
    printed a ``{}`` for every document instead of saying so."""
    for path in paths or ():
        if not store.count(collection, {path: {"$exists": True}}):
            raise QueryError(f"--fields-out: no {collection} document has the field {path!r}")


def check_window(skip: int, limit: int) -> None:
    """Reject negative skips and limits beyond what any screen or export needs."""
    if skip < 0 or limit < 0:
        raise QueryError("skip and limit must be zero or positive")
    if limit > MAX_LIMIT:
        raise QueryError(f"limit too large ({limit}, at most {MAX_LIMIT}; use 0 for all)")


_LINEAR_OPS = frozenset({"LITERAL", "NOT_LITERAL", "IN", "ANY", "AT", "SUBPATTERN", "BRANCH"})


def _linear_nodes(items: Any) -> int | None:
    """Branch nodes in an ``re`` parse tree, or None when some node can backtrack (a repeat, an assertion...)."""
    branches = 0
    for op, arg in items:
        name = str(op)
        if name not in _LINEAR_OPS:
            return None
        subtrees = (arg[-1],) if name == "SUBPATTERN" else arg[1] if name == "BRANCH" else ()
        branches += name == "BRANCH"
        for sub in subtrees:
            inner = _linear_nodes(sub)
            if inner is None:
                return None
            branches += inner
    return branches


def is_linear(pattern: str) -> bool:
    """True when matching ``pattern`` cannot backtrack beyond its own length at each position.

    Such patterns (words, classes, anchors, one alternation: what people type) need no
    per-call time limit, and ``regex``'s ``timeout`` costs about 6 µs a call, five times a
    typical caption search. The test is conservative: a repeat, an assertion, a group
    reference or more than one alternation, anywhere, sends the pattern to the timed path.
    ``re`` folds ``(?:a|b)`` into a class that ``regex`` may run as a branch, and reads
    ``{e<=2}`` (fuzzy matching to ``regex``) as text, so an alternation inside a group and
    any brace count as unsafe too.
    """
    if "{" in pattern or ("(" in pattern and "|" in pattern):
        return False
    try:
        import re._parser as sre_parse  # type: ignore[import-not-found]  # private: without it, the timed path

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            branches = _linear_nodes(sre_parse.parse(pattern))
    except (ImportError, re.error, RecursionError):
        return False
    return branches is not None and branches <= 1


@dataclass
class RegexMatcher:
    """Matches one regex against field values under a shared deadline."""

    pattern: regex.Pattern
    deadline: float
    linear: bool = False

    @classmethod
    def compile(cls, pattern: object, options: object, deadline: float) -> RegexMatcher:
        """A validated matcher; linear patterns skip the per-value time limit (see :func:`is_linear`)."""
        compiled = compile_regex(pattern, options)
        return cls(compiled, deadline, is_linear(compiled.pattern) and "x" not in str(options))

    def _too_slow(self) -> QueryError:
        return QueryError(f"regex {self.pattern.pattern[:60]!r} took longer than {REGEX_TIME_LIMIT:g} s; simplify it")

    def search(self, value: str) -> bool:
        remaining = self.deadline - work_clock()
        if remaining <= 0:
            raise self._too_slow()
        if self.linear:
            return self.pattern.search(value) is not None
        try:
            return self.pattern.search(value, timeout=remaining) is not None
        except TimeoutError:
            raise self._too_slow() from None


def project(doc: dict[str, Any], paths: list[str] | None) -> dict[str, Any]:
    """Keep only ``paths`` (dotted) of ``doc``, as MongoDB's inclusion projection does."""
    if not paths:
        return doc
    out: dict[str, Any] = {}
    for path in paths:
        src: Any = doc
        parts = path.split(".")
        for part in parts:
            if not isinstance(src, dict) or part not in src:
                break
            src = src[part]
        else:
            dst = out
            for part in parts[:-1]:
                dst = dst.setdefault(part, {})
            dst[parts[-1]] = src
    return out
