"""The store answers the same on mongita and on a pymongo-API backend, and right on the real data."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import mongomock
import pytest

from medpix_tui.errors import QueryError
from medpix_tui.query import field_filter, value_at
from medpix_tui.source import load_source
from medpix_tui.store import CASES, IMAGES, REPORTS, Store


@pytest.fixture(scope="module")
def release(source_dir: Path):
    return load_source(source_dir, check_images=False)


@pytest.fixture(scope="module", params=["mongita", "mongomock"])
def store(request, release, real_bundle_path: Path):
    if request.param == "mongita":
        yield Store.open_mongita(real_bundle_path / "store")
    else:
        s = Store.from_client(mongomock.MongoClient())
        s.load(release)
        yield s


def test_counts_match_the_release(store):
    assert store.counts() == {IMAGES: 2050, CASES: 671, REPORTS: 2050}
    assert store.count(IMAGES, {"Type": "CT"}) == 1062
    assert store.count(IMAGES, {"Type": "MR"}) == 988
    split_sizes = {s: store.count(IMAGES, store.split_filter(s)) for s in ("train", "dev", "test")}
    assert split_sizes == {"train": 1653, "dev": 197, "test": 200}


def _reference(docs, fields):
    """Plain Python over the JSON: every dotted field matches its regex, case-insensitively."""
    def value(doc, path):
        for part in path.split("."):
            doc = doc.get(part) if isinstance(doc, dict) else None
        return doc
    return sorted(d["image"] if "image" in d else d["U_id"] for d in docs
                  if all(isinstance(value(d, p), str) and re.search(r, value(d, p), re.I) for p, r in fields))


@pytest.mark.parametrize("fields", [
    [("Description.Caption", "glioma")],
    [("Description.Caption", "fracture"), ("Type", "^ct$")],
    [("Location Category", "spine"), ("Description.Sex", "^female$"), ("Description.Plane", "sag")],
    [("Description.Modality", r"w/contrast \(IV\)")],
])
def test_authors_field_query_matches_reference(store, release, fields):
    got = [d["image"] for d in store.find(IMAGES, field_filter(fields))]
    assert got == _reference(release.images, fields)
    assert got, "each of these queries has answers in the real data"


def test_case_field_query(store, release):
    fields = [("Case.Title", "fracture"), ("Topic.Category", "trauma")]
    got = [d["U_id"] for d in store.find(CASES, field_filter(fields))]
    assert got == _reference(release.cases, fields) and got


def test_or_and_operators_are_right(store, release):
    """mongita alone answers $or with 0 documents; ours must count them."""
    flt = {"$or": [{"Type": "MR"}, {"Location Category": "Head"}]}
    expected = sum(1 for d in release.images if d["Type"] == "MR" or d["Location Category"] == "Head")
    assert store.count(IMAGES, flt) == expected > 1000
    nested = {"$and": [{"Type": "CT"}, {"$nor": [{"Description.Sex": "male"}]}]}
    assert store.count(IMAGES, nested) == sum(1 for d in release.images
                                              if d["Type"] == "CT" and d["Description"]["Sex"] != "male")


@pytest.mark.parametrize("flt,expected", [
    ({"Description.Figure Part": None}, lambda d: d["Description"]["Figure Part"] is None),
    ({"Description.Plane": {"$not": {"$regex": "axial", "$options": "i"}}},
     lambda d: not re.search("axial", d["Description"]["Plane"] or "", re.I)),
    ({"Description.Age": {"$in": ["0", "1"]}}, lambda d: d["Description"]["Age"] in ("0", "1")),
    ({"Description.Caption": {"$regex": "^MR", "$options": ""}, "Type": {"$ne": "MR"}},
     lambda d: d["Description"]["Caption"].startswith("MR") and d["Type"] != "MR"),
])
def test_filters_match_python(store, release, flt, expected):
    assert [d["image"] for d in store.find(IMAGES, flt)] == sorted(d["image"] for d in release.images if expected(d))


def test_array_operators_on_cases(store, release):
    assert store.count(CASES, {"MRI": {"$size": 0}}) == sum(1 for c in release.cases if not c["MRI"])
    assert store.count(CASES, {"TAC": {"$exists": True}}) == 671


def test_sort_skip_limit_projection(store):
    docs = store.find(IMAGES, {"Type": "MR"}, sort=[("Description.Age", -1), ("image", 1)], skip=2, limit=3,
                      projection=["image", "Description.Age"])
    assert len(docs) == 3
    assert all(set(d) == {"image", "Description"} and set(d["Description"]) == {"Age"} for d in docs)
    everything = store.find(IMAGES, {"Type": "MR"}, sort=[("Description.Age", -1), ("image", 1)])
    assert [d["image"] for d in docs] == [d["image"] for d in everything[2:5]]


def test_lookups_and_join(store):
    case = store.get_case("MPX1009")
    assert case["Case"]["Title"] and set(case["TAC"]) == {d["image"] for d in store.images_of_case("MPX1009")}
    report = store.get_report(case["TAC"][0])
    assert report["Case"] == case["Case"] and report["Topic"] == case["Topic"]
    assert store.get_image("nope") is None and store.get_case("nope") is None


def test_keyword_search_ranks_caption_matches_first(store):
    hits = store.keyword_search("ring enhancing lesion", limit=10)
    assert len(hits) == 10
    scores = [s for s, _ in hits]
    assert scores == sorted(scores, reverse=True)
    assert re.search("ring.enhancing", hits[0][1]["Description"]["Caption"], re.I)
    only_mr = store.keyword_search("glioma", flt={"Type": "MR"}, limit=0)
    assert only_mr and all(d["Type"] == "MR" for _, d in only_mr)


@pytest.mark.parametrize("flt,message", [
    ({"$where": "sleep(1)"}, "operator $where is not allowed"),
    ({"$or": [{"Type": "CT"}, {"$expr": {"$eq": [1, 1]}}]}, "operator $expr is not allowed"),
    ({"Type": {"$function": {}}}, "operator $function is not allowed"),
    ({"Type": {"$regex": "("}}, "invalid regex"),
    ({"Type": {"$in": "CT"}}, "$in needs a list"),
    ([1, 2], "must be a JSON object"),
])
def test_refused_filters(store, flt, message):
    with pytest.raises(QueryError, match=re.escape(message)):
        store.find(IMAGES, flt)


def test_unknown_collection_and_huge_limit(store):
    with pytest.raises(QueryError, match="unknown collection"):
        store.find("users")
    with pytest.raises(QueryError, match="limit too large"):
        store.find(IMAGES, limit=10**9)


def test_catastrophic_regex_hits_time_limit(tmp_path):
    from tests.support import tiny_case, tiny_image, write_source

    long = "a" * 40 + "!"
    src = write_source(tmp_path / "src", cases=[tiny_case("T1", ["T1_a"], [])],
                       images=[tiny_image("T1", "T1_a", "CT", long)])
    mongita = Store.open_mongita(tmp_path / "db", writable=True)
    mongita.load(load_source(src))
    with pytest.raises(QueryError, match="took longer than"):
        mongita.find(IMAGES, {"Description.Caption": {"$regex": "^(a|a)+$"}})
    with pytest.raises(QueryError, match="took longer than"):
        mongita.find(IMAGES, {"$or": [{"Type": "MR"}, {"Description.Caption": {"$regex": "^(a|a)+$"}}]})
    mongita.close()


def test_filter_json_documents_are_not_mutated(store):
    flt = json.loads('{"$or": [{"Description.Caption": {"$regex": "cyst", "$options": "i"}}, {"Type": "MR"}]}')
    before = json.dumps(flt)
    store.find(IMAGES, flt)
    assert json.dumps(flt) == before


def test_facet_counts_match_python(store, release):
    paths = ["Type", "Location Category", "Description.Plane", "Description.Sex", "Description.Age", "nope"]
    got = store.facet_counts(IMAGES, {"Description.Caption": {"$regex": "axial", "$options": "i"}}, paths)
    chosen = [d for d in release.images if re.search("axial", d["Description"]["Caption"] or "", re.I)]
    for path in paths:
        expected = Counter(value_at(d, path) for d in chosen)
        assert got[path] == expected, path
    assert got["nope"] == {None: len(chosen)} and len(got["Type"]) == 2


def test_facet_counts_of_arrays_count_documents_per_element(store, release):
    """``TAC`` holds lists of image names: each name counts the cases that list it; objects count nothing."""
    got = store.facet_counts(CASES, {"U_id": {"$regex": "^MPX1[0-4]"}}, ["TAC", "Case"])
    chosen = [c for c in release.cases if re.match("MPX1[0-4]", c["U_id"])]
    assert got["TAC"] == Counter(name for c in chosen for name in set(c["TAC"]))
    assert sum(got["TAC"].values()) > len([c for c in chosen if c["TAC"]])  # most CT cases list several images
    assert got["Case"] == Counter()
