"""The snapshot engine's shortcuts (columns, distinct-value regex matching, sort ranks, linear
regexes) answer exactly what the plain per-document evaluation answers, on the real data."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mongomock import filtering

from medpix_tui.errors import QueryError
from medpix_tui.query import RegexMatcher, is_linear, work_clock
from medpix_tui.scan import Snapshot, values_at
from medpix_tui.source import load_source


@pytest.fixture(scope="module")
def snaps(source_dir: Path) -> dict[str, Snapshot]:
    release = load_source(source_dir, check_images=False)
    return {"images": Snapshot(release.images), "cases": Snapshot(release.cases)}


def per_document(snap: Snapshot, path: str, matcher: RegexMatcher, negate: bool, idx: list[int]) -> list[int]:
    return [i for i in idx
            if negate != any(isinstance(v, str) and matcher.search(v) for v in values_at(snap.docs[i], path))]


@pytest.mark.parametrize("path", ["Description.Plane", "Description.Caption", "Location Category", "Description.Sex"])
@pytest.mark.parametrize("pattern", ["axial", "^male", "t1|t2", "(?:ct|mr)\\b", "a+x"])
@pytest.mark.parametrize("negate", [False, True])
def test_column_matching_agrees_with_per_document_matching(snaps, path, pattern, negate) -> None:
    snap = snaps["images"]
    column = snap.column(path)
    assert column is not None
    matcher = RegexMatcher.compile(pattern, "i", time.monotonic() + 10)
    everything = list(range(len(snap.docs)))
    few = everything[::97]
    for idx in (everything, few):  # distinct values once, then document by document
        expected = per_document(snap, path, matcher, negate, idx)
        assert column.matching(matcher, negate, idx) == expected


def test_missing_values_count_as_not_matching(snaps) -> None:
    snap = snaps["images"]
    plane = snap.column("Description.Plane")
    missing = [i for i, v in enumerate(plane.values) if v is None]
    assert missing, "the release has images without a plane"
    matcher = RegexMatcher.compile(".", "", time.monotonic() + 10)
    assert set(missing) <= set(plane.matching(matcher, True, range(len(snap.docs))))
    axial = plane.matching(RegexMatcher.compile("axial", "i", time.monotonic() + 10), False, range(len(snap.docs)))
    assert 0 < len(axial) < len(snap.docs) - len(missing)
    assert not set(missing) & set(plane.matching(matcher, False, range(len(snap.docs))))


def test_paths_with_arrays_or_objects_have_no_column(snaps) -> None:
    assert snaps["cases"].column("TAC") is None
    assert snaps["images"].column("Description") is None
    assert snaps["images"].column("image").rows["MPX1009_synpic46283"] == [
        i for i, d in enumerate(snaps["images"].docs) if d["image"] == "MPX1009_synpic46283"]


@pytest.mark.parametrize("collection,keys", [
    ("images", [("Description.Age", -1)]),
    ("images", [("Description.Age", 1), ("image", -1)]),
    ("images", [("Description.Plane", 1), ("Description.Sex", -1)]),
    ("images", [("no.such.path", 1)]),
    ("cases", [("TAC", 1)]),
    ("cases", [("MRI", -1), ("Case.Title", 1)]),
])
def test_sort_ranks_order_like_mongomock(snaps, collection, keys) -> None:
    snap = snaps[collection]
    idx = list(range(0, len(snap.docs), 3))
    expected = list(idx)
    for path, direction in reversed(keys):
        expected.sort(key=lambda i: filtering.resolve_sort_key(path, snap.docs[i]), reverse=direction < 0)
    assert snap.sort(idx, keys) == expected


def test_or_of_equalities_narrows_like_a_scan(snaps) -> None:
    snap = snaps["images"]
    flt = {"$or": [{"Type": "MR"}, {"Location Category": {"$in": ["Thorax", "Abdomen"]}}]}
    expected = [i for i, d in enumerate(snap.docs)
                if d["Type"] == "MR" or d["Location Category"] in ("Thorax", "Abdomen")]
    assert snap._equality(flt) == expected
    assert snap.select(flt) == expected
    assert snap._equality({"$or": [{"Type": "MR"}, {"Description.Age": {"$gt": "40"}}]}) is None


@pytest.mark.parametrize("pattern,linear", [
    ("glioma", True), ("^male", True), ("ring|enhanc|lesion", True), ("[a-z]\\b\\d", True), ("(?i)ct$", True),
    ("a+", False), ("x?", False), ("a{2}", False), ("(a|a)(b|b)", False), ("(?:a|e)x", False), ("^(a|a)+$", False),
    ("(?<=a)b", False), ("(a)\\1", False), ("(?:glioma){e<=2}", False), ("a|b(c|d)", False),
])
def test_linear_patterns_are_told_apart_conservatively(pattern, linear) -> None:
    assert is_linear(pattern) is linear


def test_a_linear_matcher_still_honours_the_deadline() -> None:
    matcher = RegexMatcher.compile("glioma", "i", work_clock() - 1)
    assert matcher.linear
    with pytest.raises(QueryError, match="took longer than"):
        matcher.search("glioma")
    assert not RegexMatcher.compile("glio ma", "x", work_clock() + 1).linear  # verbose: the parse would differ


@pytest.mark.parametrize("pattern", ["glioma", "Head|Thorax"])  # the plain path and the timed one
def test_time_other_processes_take_counts_against_no_limit(pattern: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a loaded 2-core host a harmless "Head|Thorax" export was refused as "took longer than
    # 2 s": the limit read the wall clock. It reads this thread's CPU time, which the time a
    # loaded host takes away does not spend: here the wall clock jumps an hour ahead.
    matcher = RegexMatcher.compile(pattern, "i", work_clock() + 2)
    wall = time.monotonic() + 3600
    monkeypatch.setattr(time, "monotonic", lambda: wall)
    assert matcher.search("glioma of the Head")


@pytest.mark.parametrize("docs,column", [
    ([{"a": {"b": "x"}}, {"a": {"b": None}}, {"a": {}}, {}], ["x", None, None, None]),  # missing reads as None
    ([{"a": {"b": "x"}}, {"a": None}], None),  # null on the way: mongomock finds no candidate
    ([{"a": {"b": "x"}}, {"a": "text"}], None),  # a string on the way
    ([{"a": {"b": "x"}}, {"a": [{"b": "y"}]}], None),  # an array on the way
    ([{"a": {"b": "x"}}, {"a": {"b": 3}}], None),  # not a string
    ([{"a": {"b": "x"}}, {"a": {"b": ["x"]}}], None),  # an array at the end
])
def test_columns_are_only_paths_of_plain_strings(docs, column) -> None:
    got = Snapshot(docs).column("a.b")
    assert (got.values if got else None) == column
    snap = Snapshot(docs)  # column or not, filters answer the same
    has_x = [i for i, d in enumerate(docs) if isinstance(d.get("a"), dict) and d["a"].get("b") in ("x", ["x"])]
    for flt in ({"a.b": "x"}, {"a.b": {"$in": ["x", "z"]}}, {"a.b": {"$regex": "x"}}):
        assert snap.select(flt) == has_x, flt
    assert snap.select({"a.b": {"$not": {"$regex": "x"}}}) == [i for i in range(len(docs)) if i not in has_x]


def test_not_and_all_read_paths_through_strings_and_past_arrays_as_mongodb_does(snaps) -> None:
    """``$not`` negates its whole condition and ``$all: [null]`` is ``null``, also where mongomock
    finds no value at all (``MRI.1`` of a case with fewer than two MR images, ``Type.x``)."""
    cases, images = snaps["cases"], snaps["images"]
    short = [i for i, d in enumerate(cases.docs) if len(d["MRI"]) < 2]
    assert short and len(short) < len(cases.docs)
    assert cases.select({"MRI.1": {"$not": {"$exists": True}}}) == short
    assert cases.select({"MRI.1": {"$not": {"$ne": None}}}) == short
    assert cases.select({"MRI.1": {"$all": [None]}}) == short
    assert cases.select({"MRI.1": {"$not": {"$all": [None]}}}) == [i for i in range(len(cases.docs)) if i not in short]
    assert images.select({"Type.x": {"$not": {"$eq": None}}}) == []
    assert images.select({"Type.x": {"$all": [None]}}) == list(range(len(images.docs)))


def test_not_beside_a_regex_is_evaluated_not_refused(snaps) -> None:
    images = snaps["images"]
    mr = [i for i, d in enumerate(images.docs) if d["Type"] == "MR"]
    assert images.select({"Type": {"$not": {"$regex": "c", "$options": "i", "$ne": "MR"}}}) == mr


def test_an_empty_not_is_refused() -> None:
    from medpix_tui.query import validate_filter

    with pytest.raises(QueryError, match=r"\$not needs"):
        validate_filter({"Type": {"$not": {}}})
