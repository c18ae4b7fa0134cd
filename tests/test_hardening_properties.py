"""Property-based tests of the query layer (hypothesis).

* Random field/value pairs, regexes, sort keys, windows and JSON filter trees (allowed and
  forbidden operators, any nesting, any JSON values) never raise anything but
  :class:`~medpix_tui.errors.QueryError` - from validation, the embedded engine or mongomock.
* Any filter with a forbidden operator injected anywhere is refused.
* Generated filters that plain Python can evaluate (equality, ``$in``/``$nin``/``$all``, ``$ne``,
  ``$exists``, ``$regex``, ``$not`` of any of these, string comparisons, ``$size``, ``$and``/``$or``/``$nor``
  on top-level and nested fields) and the authors' regex query return the same documents from
  ``Store.find`` (mongita over the session bundle, and mongomock) as a reference over the JSON.

The strategies are shared with ``bench/fuzz.py``, which runs them for many more examples.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medpix_tui.errors import QueryError
from medpix_tui.query import (
    ALLOWED_OPERATORS,
    check_window,
    field_filter,
    parse_field_args,
    parse_filter,
    parse_projection,
    parse_sort,
    validate_filter,
)
from medpix_tui.store import CASES, ID_FIELD, IMAGES, REPORTS

# -- the data the strategies draw from -------------------------------------------------

FORBIDDEN = ("$where", "$function", "$expr", "$accumulator", "$jsonSchema", "$text", "$mod", "$type",
             "$comment", "$geoWithin", "$near", "$rand", "$sampleRate", "$bitsAllSet", "$lookup", "$out", "$merge")
OPERATORS = tuple(sorted(ALLOWED_OPERATORS)) + FORBIDDEN
REGEX_TOKENS = (".", ".*", ".+", "\\s", "\\w+", "\\d", "[a-z]", "[^ ]", "^", "$", "?", "|", "\\b", "(?:a|e)", "(", ")",
                "[", "]", "*", "+", "{2}", "\\", "(?i)", "\\.", "-", " ", "ct", "MR", "[[:alpha:]]", "(?<=a)")


@lru_cache(maxsize=None)
def release_docs(source: str) -> dict[str, list[dict[str, Any]]]:
    """The release's documents per collection, as plain JSON (Image_Reports joined like the store)."""
    from medpix_tui.source import load_source
    from medpix_tui.store import image_report

    rel = load_source(Path(source), check_images=False)
    by_id = {c["U_id"]: c for c in rel.cases}
    return {IMAGES: rel.images, CASES: rel.cases, REPORTS: [image_report(d, by_id.get(d["U_id"])) for d in rel.images]}


def _paths(doc: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in doc.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out += _paths(value, f"{prefix}{key}.")
    return out


@lru_cache(maxsize=None)
def vocabulary(source: str) -> dict[str, Any]:
    """Real paths per collection, a sample of real values per path, and frequent words."""
    docs = release_docs(source)
    paths = {c: sorted({p for d in ds for p in _paths(d)}) for c, ds in docs.items()}
    paths[CASES] += ["TAC.0", "MRI.1", "TAC.x"]
    values: dict[str, list[Any]] = {}
    for ds in docs.values():
        for d in ds[::7]:
            for p in _paths(d):
                v = resolve(d, p)
                if v and not isinstance(v[0], dict) and len(values.setdefault(p, [])) < 40:
                    values[p].append(v[0] if not isinstance(v[0], str) else v[0][:2000])
    values["TAC.0"] = values["TAC"] = [n for d in docs[CASES][::20] for n in d["TAC"]][:30] + [[]]
    values["MRI.1"] = values["MRI"] = [n for d in docs[CASES][::20] for n in d["MRI"]][:30] + [[]]
    words = Counter(w for d in docs[IMAGES] for w in re.findall(r"[A-Za-z]{3,}", d["Description"]["Caption"] or ""))
    return {"paths": paths, "values": {k: sorted(set(map(json.dumps, v))) for k, v in values.items()},
            "words": [w for w, _ in words.most_common(150)]}


# -- the reference: MongoDB's semantics for this data, in plain Python --------------------

def resolve(doc: Any, path: str) -> list[Any]:
    """Values at a dotted path: an array is a value and so is each of its elements; missing -> []."""
    values = [doc]
    for part in path.split("."):
        nxt = []
        for v in values:
            if isinstance(v, dict) and part in v:
                nxt.append(v[part])
            elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
                nxt.append(v[int(part)])
            elif isinstance(v, list):
                nxt += [e[part] for e in v if isinstance(e, dict) and part in e]
        values = nxt
    out = []
    for v in values:
        out.append(v)
        if isinstance(v, list):
            out += v
    return out


def _eq(found: list[Any], value: Any) -> bool:
    if value is None:
        return not found or any(v is None for v in found)
    return any(type(v) is type(value) and v == value for v in found)


def _cmp(found: list[Any], op: str, value: str) -> bool:
    test = {"$gt": lambda a: a > value, "$gte": lambda a: a >= value,
            "$lt": lambda a: a < value, "$lte": lambda a: a <= value}[op]
    return any(isinstance(v, str) and test(v) for v in found)


def _flags(options: str) -> int:
    return sum(f for c, f in (("i", re.I), ("m", re.M), ("s", re.S), ("x", re.X)) if c in options)


def _cond(found: list[Any], cond: Any) -> bool:
    if not (isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond)):
        return _eq(found, cond)
    ok = True
    for op, arg in cond.items():
        if op == "$eq":
            ok &= _eq(found, arg)
        elif op == "$ne":
            ok &= not _eq(found, arg)
        elif op == "$in":
            ok &= any(_eq(found, a) for a in arg)
        elif op == "$nin":
            ok &= not any(_eq(found, a) for a in arg)
        elif op == "$all":
            ok &= bool(arg) and all(_eq(found, a) for a in arg)
        elif op == "$exists":
            ok &= bool(found) == bool(arg)
        elif op == "$regex":
            pattern = re.compile(arg, _flags(cond.get("$options", "")))
            ok &= any(isinstance(v, str) and pattern.search(v) is not None for v in found)
        elif op == "$options":
            pass
        elif op == "$not":
            ok &= not _cond(found, arg)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            ok &= _cmp(found, op, arg)
        elif op == "$size":
            ok &= any(isinstance(v, list) and len(v) == arg for v in found)
        else:
            raise AssertionError(f"the reference does not evaluate {op}")
    return ok


def reference_match(doc: dict[str, Any], flt: dict[str, Any]) -> bool:
    """Does ``doc`` match ``flt``? Plain Python, for the operators the generator below uses."""
    for key, value in flt.items():
        if key == "$and":
            ok = all(reference_match(doc, f) for f in value)
        elif key == "$or":
            ok = any(reference_match(doc, f) for f in value)
        elif key == "$nor":
            ok = not any(reference_match(doc, f) for f in value)
        else:
            ok = _cond(resolve(doc, key), value)
        if not ok:
            return False
    return True


def reference_ids(docs: list[dict[str, Any]], collection: str, flt: dict[str, Any]) -> list[str]:
    return sorted(d[ID_FIELD[collection]] for d in docs if reference_match(d, flt))


# -- strategies ----------------------------------------------------------------------

def regexes(words: list[str]) -> st.SearchStrategy[str]:
    """Regex-ish strings: real words, metacharacters, and the odd invalid or catastrophic piece."""
    token = st.one_of(st.sampled_from(words), st.sampled_from(REGEX_TOKENS), st.text(max_size=3))
    return st.lists(token, min_size=1, max_size=5).map("".join)


def valid_regexes(words: list[str]) -> st.SearchStrategy[str]:
    def ok(p: str) -> bool:
        try:
            re.compile(p)
            import regex

            regex.compile(p, regex.V0)
            return True
        except Exception:  # noqa: BLE001 - any compile error means "not a pattern"
            return False
    token = st.one_of(st.sampled_from(words),
                      st.sampled_from(("", ".", "\\s", "[a-z]", "^", "$", "(?:a|e)", "\\w+", " ")))
    return st.lists(token, min_size=1, max_size=3).map("".join).filter(ok)


def random_paths() -> st.SearchStrategy[str]:
    """Well-formed dotted paths that mostly name nothing (``Ty pe``, ``a.b``, ``CT_e``)."""
    word = st.text(alphabet="abcdeCT_", min_size=1, max_size=4)
    part = st.one_of(word, st.builds(lambda a, b: f"{a} {b}", word, word))
    return st.lists(part, min_size=1, max_size=3).map(".".join)


def evaluable_filters(vocab: dict[str, Any], collection: str, max_leaves: int = 6) -> st.SearchStrategy[dict[str, Any]]:
    """Allowed filters the reference evaluates, over real and made-up paths with real and made-up values."""
    words = vocab["words"]
    real = vocab["paths"][collection]
    text = st.one_of(st.sampled_from(words), st.text(alphabet="abcMRCT emal", max_size=4))

    def value_for(path: str) -> st.SearchStrategy[Any]:
        known = vocab["values"].get(path)
        base = st.one_of(text, st.none())
        return st.one_of(st.sampled_from(known).map(json.loads), base) if known else base

    def condition(path: str) -> st.SearchStrategy[Any]:
        v = value_for(path)
        rx = st.builds(lambda p, o: {"$regex": p, "$options": o} if o else {"$regex": p}, valid_regexes(words),
                       st.sampled_from(["", "i", "im", "s"]))
        strings = st.one_of(st.sampled_from(words), value_for(path).filter(lambda x: isinstance(x, str)))
        operators = st.one_of(
            v.map(lambda x: {"$eq": x}), v.map(lambda x: {"$ne": x}),
            st.lists(v, max_size=3).map(lambda xs: {"$in": xs}), st.lists(v, max_size=3).map(lambda xs: {"$nin": xs}),
            st.lists(v, min_size=1, max_size=2).map(lambda xs: {"$all": xs}),
            st.booleans().map(lambda b: {"$exists": b}), rx,
            st.builds(lambda op, s: {op: s}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), strings),
            st.integers(0, 4).map(lambda n: {"$size": n}),
            st.builds(lambda a, b: {"$ne": a, "$exists": b}, v, st.booleans()),
            st.builds(lambda r, a: {**r, "$ne": a}, rx, v),
        )
        return st.one_of(v, operators, operators.map(lambda c: {"$not": c}))

    path = st.one_of(st.sampled_from(real), st.sampled_from(real), random_paths())
    leaf = path.flatmap(lambda p: condition(p).map(lambda c: {p: c}))

    def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for part in parts:
            for k, v in part.items():
                out.setdefault(k, v)
        return out

    def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
        group = st.lists(children, min_size=1, max_size=3)
        return st.one_of(group.map(lambda xs: {"$and": xs}), group.map(lambda xs: {"$or": xs}),
                         group.map(lambda xs: {"$nor": xs}), group.map(merge))

    return st.recursive(leaf, extend, max_leaves=max_leaves)


def json_values(keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70), st.floats(), st.text(max_size=6))
    return st.recursive(scalar, lambda ch: st.one_of(st.lists(ch, max_size=4), st.dictionaries(keys, ch, max_size=4)),
                        max_leaves=12)


def any_filters(vocab: dict[str, Any], collection: str) -> st.SearchStrategy[Any]:
    """Anything a user might type as a filter: random JSON over operators and paths, and mutated valid filters."""
    keys = st.one_of(st.sampled_from(OPERATORS), st.sampled_from(vocab["paths"][collection]), st.text(max_size=5),
                     random_paths())
    tree = json_values(keys)
    return st.one_of(st.dictionaries(keys, tree, max_size=4), tree, evaluable_filters(vocab, collection),
                     st.builds(inject, evaluable_filters(vocab, collection, 4), st.sampled_from(OPERATORS), tree,
                               st.integers(0, 10 ** 6)))


def inject(flt: Any, key: str, value: Any, where: int) -> Any:
    """Put ``{key: value}`` into one of the places a filter allows an object: top level, a branch, a condition."""
    spots: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            spots.append(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    flt = json.loads(json.dumps(flt))
    walk(flt)
    spots[where % len(spots)][key] = value
    return flt


# -- fixtures ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vocab(source_dir: Path) -> dict[str, Any]:
    return vocabulary(str(source_dir))


@pytest.fixture(scope="module")
def docs(source_dir: Path) -> dict[str, list[dict[str, Any]]]:
    return release_docs(str(source_dir))


@pytest.fixture(scope="module")
def stores(real_bundle_path: Path, source_dir: Path):
    import mongomock

    from medpix_tui.source import load_source
    from medpix_tui.store import Store

    embedded = Store.open_mongita(real_bundle_path / "store")
    mock = Store.from_client(mongomock.MongoClient())
    mock.load(load_source(source_dir, check_images=False))
    yield {"mongita": embedded, "mongomock": mock}
    embedded.close()


QUICK = settings(max_examples=70, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def only_query_errors(fn, *args: Any, **kwargs: Any) -> Any:
    """Call ``fn``; a QueryError is a fine answer, anything else fails the test."""
    try:
        return fn(*args, **kwargs)
    except QueryError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None


# -- properties ------------------------------------------------------------------------

COLLECTIONS = st.sampled_from([IMAGES, CASES, REPORTS])


@QUICK
@given(data=st.data())
def test_random_filters_raise_only_query_errors(data, vocab, stores) -> None:
    collection = data.draw(COLLECTIONS)
    flt = data.draw(any_filters(vocab, collection))
    text = data.draw(st.one_of(st.just(json.dumps(flt)), st.text(max_size=30)))
    only_query_errors(parse_filter, text)
    if only_query_errors(validate_filter, flt) is None:
        return
    sort = data.draw(st.lists(st.tuples(st.sampled_from(vocab["paths"][collection]), st.sampled_from([1, -1])),
                              max_size=2))
    for store in stores.values():
        only_query_errors(store.find, collection, flt, sort=sort, limit=5)
        only_query_errors(store.count, collection, flt)


@QUICK
@given(data=st.data())
def test_forbidden_operators_are_refused_wherever_they_hide(data, vocab) -> None:
    flt = data.draw(evaluable_filters(vocab, data.draw(COLLECTIONS), 4))
    key = data.draw(st.sampled_from(FORBIDDEN))
    bad = inject(flt, key, data.draw(json_values(st.text(max_size=3))), data.draw(st.integers(0, 10 ** 6)))
    with pytest.raises(QueryError, match=re.escape(key)):
        validate_filter(bad)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(fields=st.lists(st.tuples(st.one_of(st.text(max_size=12), random_paths()), st.text(max_size=12)), max_size=3),
       args=st.lists(st.text(max_size=20), max_size=3), sort=st.text(max_size=20), skip=st.integers(-5, 10 ** 6),
       limit=st.integers(-5, 10 ** 6))
def test_field_pairs_and_options_raise_only_query_errors(fields, args, sort, skip, limit) -> None:
    only_query_errors(field_filter, fields)
    only_query_errors(parse_field_args, args)
    only_query_errors(parse_sort, sort)
    only_query_errors(parse_projection, sort)
    only_query_errors(check_window, skip, limit)


@QUICK
@given(data=st.data())
def test_filters_match_the_python_reference(data, vocab, docs, stores) -> None:
    collection = data.draw(COLLECTIONS)
    flt = data.draw(evaluable_filters(vocab, collection))
    expected = reference_ids(docs[collection], collection, flt)
    for name, store in stores.items():
        if name == "mongomock" and not mongomock_is_exact(flt):
            continue
        got = [d[ID_FIELD[collection]] for d in store.find(collection, flt)]
        assert got == expected, (name, flt)


def mongomock_is_exact(flt: Any) -> bool:
    """Whether mongomock, the stand-in for a server, answers ``flt`` as MongoDB does.

    It counts a non-empty scalar as an array of size 1 for ``$size``; it finds no value at all
    on a path through a string or past the end of an array, which ``$not`` and ``$all: [null]``
    then read wrongly; and it refuses ``$options`` in a ``$not`` beside other operators.
    """
    def exact(node: Any) -> bool:
        if isinstance(node, list):
            return all(exact(v) for v in node)
        if not isinstance(node, dict):
            return True
        if "$size" in node or "$all" in node:
            return False
        inner = node.get("$not")
        if isinstance(inner, dict) and not set(inner) <= {"$regex", "$options"}:
            return False
        return all(exact(v) for v in node.values())
    return exact(flt)


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_authors_regex_query_matches_the_python_reference(data, vocab, docs, stores) -> None:
    collection = data.draw(COLLECTIONS)
    paths = st.one_of(st.sampled_from(vocab["paths"][collection]), random_paths())
    fields = data.draw(st.lists(st.tuples(paths, valid_regexes(vocab["words"])), min_size=1, max_size=3))
    flt = field_filter(fields)
    expected = sorted(d[ID_FIELD[collection]] for d in docs[collection]
                      if all(any(isinstance(v, str) and re.search(r, v, re.I) for v in resolve(d, p))
                             for p, r in fields))
    for name, store in stores.items():
        assert [d[ID_FIELD[collection]] for d in store.find(collection, flt)] == expected, (name, fields)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_random_regexes_and_keywords_raise_only_query_errors(data, vocab, stores) -> None:
    pattern = data.draw(regexes(vocab["words"]))
    options = data.draw(st.text(alphabet="imsxz", max_size=2))
    only_query_errors(stores["mongita"].count, IMAGES,
                      {"Description.Caption": {"$regex": pattern, "$options": options}})
    only_query_errors(stores["mongita"].keyword_search, data.draw(st.text(max_size=25)), limit=5)


# -- ingest --------------------------------------------------------------------------

BAD_IDS = ("T1", "T2", "T9", "", " ", "T1 ", "../x", "/abs", "a\\b", ".hidden", "x" * 200, "T\x00", "é", 7, None,
           ["T1"])
JUNK = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                 st.lists(st.text(max_size=3), max_size=2),
                 st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2))


def _mutate_doc(data: Any, doc: dict[str, Any]) -> Any:
    """Delete, retype or re-id keys of one document (or replace it outright)."""
    for _ in range(data.draw(st.integers(0, 3))):
        action = data.draw(st.sampled_from(["delete", "junk", "id", "nested", "whole", "extra"]))
        keys = sorted(doc) or ["x"]
        key = data.draw(st.sampled_from(keys))
        if action == "delete":
            doc.pop(key, None)
        elif action == "junk":
            doc[key] = data.draw(JUNK)
        elif action == "id":
            doc[data.draw(st.sampled_from(["U_id", "image", "TAC", "MRI"]))] = data.draw(
                st.one_of(st.sampled_from(BAD_IDS), st.lists(st.sampled_from(BAD_IDS), max_size=3)))
        elif action == "nested" and isinstance(doc.get(key), dict) and doc[key]:
            doc[key][data.draw(st.sampled_from(sorted(doc[key])))] = data.draw(JUNK)
        elif action == "whole":
            return data.draw(JUNK)
        else:
            doc[data.draw(st.text(max_size=4))] = data.draw(JUNK)
    return doc


def _mutate_bytes(data: Any, raw: bytes) -> bytes:
    action = data.draw(st.sampled_from(["keep", "keep", "truncate", "flip", "insert", "random", "bom", "latin1"]))
    if action == "truncate":
        return raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    if action == "flip" and raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        return raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1:]
    if action == "insert":
        i = data.draw(st.integers(0, len(raw)))
        return raw[:i] + data.draw(st.binary(max_size=4)) + raw[i:]
    if action == "random":
        return data.draw(st.binary(max_size=40))
    if action == "bom":
        return b"\xef\xbb\xbf" + raw
    if action == "latin1":
        return raw.replace(b"made-up", "m\xe4de-up".encode("latin-1"))
    return raw


def draw_source(data: Any, root: Path) -> Path:
    """A small source folder: valid made-up documents, then mutated documents, bytes and image files."""
    from PIL import Image

    from tests.support import tiny_case, tiny_image

    n = data.draw(st.integers(1, 3))
    cases = [tiny_case(f"T{i}", [f"T{i}_a"], [f"T{i}_b"] if i % 2 else []) for i in range(n)]
    images = ([tiny_image(f"T{i}", f"T{i}_a", "CT") for i in range(n)]
              + [tiny_image(f"T{i}", f"T{i}_b", "MR") for i in range(n) if i % 2])
    cases = [_mutate_doc(data, c) if data.draw(st.booleans()) else c for c in cases]
    images = [_mutate_doc(data, d) if data.draw(st.booleans()) else d for d in images]
    if data.draw(st.booleans()):
        (cases if data.draw(st.booleans()) else images).append(data.draw(st.sampled_from(cases + images)))
    root.mkdir(parents=True)
    for name, docs in (("Case_topic.json", cases), ("Descriptions.json", images)):
        if data.draw(st.integers(0, 20)):
            (root / name).write_bytes(_mutate_bytes(data, json.dumps(docs).encode()))
    if data.draw(st.booleans()):
        (root / "splitted_dataset").mkdir()
        splits = data.draw(st.one_of(st.just({"train": ["T0"], "dev": [], "test": ["T1"]}), JUNK,
                                     st.dictionaries(st.sampled_from(["train", "dev", "test", "x"]), JUNK, max_size=3)))
        (root / "splitted_dataset" / "uid_list.json").write_bytes(_mutate_bytes(data, json.dumps(splits).encode()))
    if data.draw(st.integers(0, 10)):
        (root / "images").mkdir()
    for doc in images:
        name = doc.get("image") if isinstance(doc, dict) else None
        if (not isinstance(name, str) or not name or "/" in name or "\x00" in name or name in (".", "..")
                or len(name) > 200):
            continue
        path = root / "images" / f"{name}.png"
        if not path.parent.is_dir() or path.exists() or path.is_symlink():
            continue
        kind = data.draw(st.sampled_from(["png", "png", "png", "missing", "empty", "truncated", "junk", "dir", "jpeg",
                                          "bomb"]))
        if kind in ("png", "truncated"):
            Image.new("L", (8, 8), 9).save(path)
            if kind == "truncated":
                path.write_bytes(path.read_bytes()[:30])
        elif kind == "empty":
            path.write_bytes(b"")
        elif kind == "junk":
            path.write_bytes(data.draw(st.binary(max_size=30)))
        elif kind == "dir":
            path.mkdir(exist_ok=True)
        elif kind == "jpeg":
            Image.new("RGB", (8, 8)).save(path, format="JPEG")
        elif kind == "bomb":
            from tests.test_hardening_badinput import png_header

            path.write_bytes(png_header(20_000, 20_000))
    return root


def check_loaded_source(root: Path) -> None:
    """``load_source`` accepts a folder only if the ingest's promises hold; else one MedpixError line."""
    from medpix_tui.errors import MedpixError
    from medpix_tui.source import decode_problem, is_plain_id, load_source

    try:
        src = load_source(root)
    except MedpixError as exc:
        assert str(exc) and "\n" not in str(exc) and exc.exit_code == 2
        return
    uids = [c["U_id"] for c in src.cases]
    names = [d["image"] for d in src.images]
    assert len(set(uids)) == len(uids) and len(set(names)) == len(names)
    assert all(is_plain_id(x) for x in uids + names)
    assert all(d["U_id"] in uids and d["Type"] in ("CT", "MR") for d in src.images)
    assert all(decode_problem(src.image_path(n)) is None for n in names)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_random_sources_are_loaded_or_refused_in_one_line(data, tmp_path_factory) -> None:
    check_loaded_source(draw_source(data, tmp_path_factory.mktemp("fuzz") / "src"))


def test_null_through_a_non_document_is_missing(stores, docs) -> None:
    """A path through a string, or past the end of an array, is missing, so null matches it
    (mongomock finds nothing)."""
    embedded = stores["mongita"]
    assert embedded.count(IMAGES, {"Type.x": None}) == 2050
    assert embedded.count(IMAGES, {"Type.x": {"$ne": None}}) == 0
    assert embedded.count(CASES, {"TAC.x": None}) == 671
    no_ct = sorted(c["U_id"] for c in docs[CASES] if not c["TAC"])
    assert 0 < len(no_ct) < 671
    for flt in ({"TAC.0": None}, {"TAC.0": {"$eq": None}}, {"TAC.0": {"$in": [None, "nothing"]}},
                {"$or": [{"MRI": "nothing"}, {"TAC.0": None}]}):
        assert [c["U_id"] for c in embedded.find(CASES, flt)] == no_ct, flt
    for flt in ({"TAC.0": {"$ne": None}}, {"TAC.0": {"$nin": [None]}}, {"$nor": [{"TAC.0": None}]}):
        assert embedded.count(CASES, flt) == 671 - len(no_ct), flt


# -- SQL statements (issue 23): refused or answered, never a write, never a file outside -------

SQL_SECRET = "SECRET-MARKER-7f3a"
SQL_TABLES = ("images", "cases", "image_reports", "medpix_bundle.images", "t", "information_schema.tables")
SQL_COLUMNS = ("*", "image", "u_id", "modality", "caption", "age", "split", "title", "count(*)", "1", "NULL")
SQL_FUNCTIONS = ("read_text", "read_blob", "glob", "read_csv", "read_csv_auto", "read_json", "read_parquet",
                 "parquet_metadata", "sniff_csv", "query", "query_table", "lower", "length", "repeat", "range",
                 "generate_series", "lpad", "list_resize", "printf", "current_setting", "getvariable", "sum", "md5")
SQL_VERBS = ("COPY", "EXPORT DATABASE", "IMPORT DATABASE", "ATTACH", "DETACH", "INSTALL", "LOAD", "FORCE INSTALL",
             "SET", "RESET", "USE", "PRAGMA", "CHECKPOINT", "VACUUM", "CALL", "PREPARE p AS", "EXECUTE", "DROP TABLE",
             "DROP MACRO", "ALTER TABLE", "DELETE FROM", "UPDATE", "INSERT INTO", "CREATE SECRET", "CREATE SCHEMA",
             "CREATE TYPE", "CREATE SEQUENCE", "CREATE TABLE", "CREATE TEMP TABLE", "CREATE OR REPLACE TEMP VIEW",
             "CREATE TEMP MACRO", "CREATE INDEX", "EXPLAIN", "EXPLAIN ANALYZE", "WITH", "SELECT", "FROM", "SUMMARIZE",
             "DESCRIBE", "SHOW", "PIVOT", "BEGIN", "COMMIT", "ROLLBACK", "UPDATE EXTENSIONS")
SQL_SETTINGS = ("enable_external_access", "temp_directory", "lock_configuration", "allowed_directories",
                "memory_limit", "threads", "autoinstall_known_extensions", "home_directory")


def sql_paths(bundle: Path, work: Path) -> list[str]:
    """Paths a hostile statement aims at: the bundle's own files, the working folder's .tmp/, the system."""
    return [str(bundle / "parquet" / "images.parquet"), str(bundle / "manifest.json"),
            str(bundle / "parquet" / "new.csv"), str(bundle), ".tmp/secret.txt", ".tmp/out.csv",
            str(work / ".tmp" / "secret.csv"), "/etc/passwd", "out.parquet", "*", "**/*.json", "s3://bucket/x",
            "http://localhost/x", ":memory:"]


def _quote_sql(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def sql_statements(paths: list[str]) -> st.SearchStrategy[str]:
    """Statements as an attacker or an analyst types them: templates over real names and paths, and token soup."""
    path = st.sampled_from(paths).map(_quote_sql)
    number = st.sampled_from(["0", "3", "10000", "10001", "1e12", "3000000000", "-1", "pow(10, 8)::INT", "2**62"])
    column = st.sampled_from(SQL_COLUMNS)
    table = st.sampled_from(SQL_TABLES)
    call = st.tuples(st.sampled_from(SQL_FUNCTIONS),
                     st.lists(st.one_of(path, number, column), min_size=0, max_size=3)).map(
        lambda t: f"{t[0]}({', '.join(t[1])})")
    source = st.one_of(table, path, call, number.map(lambda n: f"range({n})"))
    select = st.tuples(st.lists(st.one_of(column, call), min_size=1, max_size=3), source,
                       st.sampled_from(["", " LIMIT 5", " WHERE modality = 'MR'", " GROUP BY ALL", " ORDER BY 1"])).map(
        lambda t: f"SELECT {', '.join(t[0])} FROM {t[1]}{t[2]}")
    benign_call = st.tuples(st.sampled_from(["lower", "length", "md5", "upper", "repeat", "range", "lpad",
                                             "list_resize"]),
                            st.lists(st.one_of(st.sampled_from(["caption", "title", "age", "'x'", "[1, 2]"]), number),
                                     min_size=1, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})")
    benign = st.tuples(st.lists(st.one_of(column, benign_call), min_size=1, max_size=3),
                       st.sampled_from(["images", "cases", "image_reports", "range(5)",
                                        "images a JOIN cases b USING (u_id)"]),
                       st.sampled_from(["", " LIMIT 5", " GROUP BY ALL", " ORDER BY 1"])).map(
        lambda t: f"SELECT {', '.join(t[0])} FROM {t[1]}{t[2]}")
    templates = st.one_of(
        benign, benign, benign, select,
        st.tuples(select, path, st.sampled_from(["", " (FORMAT csv)", " (FORMAT parquet)"])).map(
            lambda t: f"COPY ({t[0]}) TO {t[1]}{t[2]}"),
        st.tuples(table, path).map(lambda t: f"COPY {t[0]} FROM {t[1]}"),
        st.tuples(path, st.sampled_from(["", " AS x", " AS x (READ_ONLY)", " AS x (TYPE sqlite)"])).map(
            lambda t: f"ATTACH {t[0]}{t[1]}"),
        st.tuples(st.sampled_from(SQL_SETTINGS),
                  st.one_of(path, st.sampled_from(["true", "false", "'1GB'", "[]"]))).map(
            lambda t: f"SET {t[0]} = {t[1]}"),
        st.tuples(st.sampled_from(["CREATE TEMP TABLE t AS", "CREATE TABLE t AS", "CREATE OR REPLACE TEMP VIEW t AS",
                                   "INSERT INTO t", "EXPLAIN ANALYZE", "EXPLAIN", "WITH w AS (SELECT 1)"]),
                  select).map(" ".join),
        st.tuples(st.sampled_from(["CREATE TEMP MACRO m(x) AS", "CREATE MACRO repeat(s, n) AS", "SELECT"]),
                  st.one_of(call, column)).map(" ".join),
        st.tuples(st.sampled_from(SQL_VERBS), st.lists(st.one_of(path, table, column, call, number), max_size=3)).map(
            lambda t: " ".join([t[0], *t[1]])),
        st.just(f"EXPORT DATABASE {_quote_sql(paths[3])}"),
    )
    soup = st.lists(st.one_of(st.sampled_from(SQL_VERBS + SQL_FUNCTIONS + SQL_TABLES + SQL_COLUMNS),
                              path, number,
                              st.sampled_from(["(", ")", ",", ";", "--", "/*", "*/", "'", '"', ".", "=", "$$",
                                               "\udcff", "\x00", "\u2028"]),
                              st.text(max_size=6)), max_size=10).map(" ".join)
    comments = st.sampled_from(["", "/* c */ ", "-- c\n", ";"])
    return st.tuples(comments, st.one_of(templates, templates, soup),
                     st.sampled_from(["", ";", "; SELECT 1", ";;"])).map("".join)


def check_sql_statement(con: Any, statement: str, watched: dict[Path, dict[str, str]]) -> None:
    """One statement is answered or refused with one ``QueryError`` line, file access by the statement
    check itself; no watched folder changes, and no answer holds the secret planted outside the bundle."""
    from tests.support import tree_digest

    try:
        _, rows = con.run(statement, timeout=2.0, max_rows=20_000)
    except QueryError as exc:
        assert str(exc) and "\n" not in str(exc) and "internal error" not in str(exc), repr(str(exc))
        # the statement check refuses file access before DuckDB runs anything; DuckDB's own wall is the spare
        assert "Permission Error" not in str(exc), f"only DuckDB's wall stopped {statement!r}"
    else:
        assert SQL_SECRET not in repr(rows), statement
    for folder, before in watched.items():
        assert tree_digest(folder) == before, f"{statement!r} changed {folder}"


@pytest.fixture(scope="module")
def sql_sandbox(tmp_path_factory: pytest.TempPathFactory):
    """A tiny bundle and a working folder holding ``.tmp/secret.txt``, the process working there."""
    import os

    from medpix_tui.bundle import build_bundle
    from medpix_tui.sql import connect
    from tests.support import tree_digest, write_source

    root = tmp_path_factory.mktemp("sqlfuzz")
    bundle = build_bundle(write_source(root / "src"), root / "bundle", with_model=False)
    work = root / "work"
    (work / ".tmp").mkdir(parents=True)
    (work / ".tmp" / "secret.txt").write_text(SQL_SECRET)
    (work / ".tmp" / "secret.csv").write_text(f"s\n{SQL_SECRET}\n")
    old = os.getcwd()
    os.chdir(work)
    try:
        yield (connect(bundle / "parquet"), sql_paths(bundle, work),
               {bundle: tree_digest(bundle), work: tree_digest(work)})
    finally:
        os.chdir(old)


SQL_FUZZED = Counter()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_random_sql_is_refused_or_answered_and_touches_no_file(data, sql_sandbox) -> None:
    con, paths, watched = sql_sandbox
    statement = data.draw(sql_statements(paths))
    SQL_FUZZED["statements"] += 1
    check_sql_statement(con, statement, watched)
