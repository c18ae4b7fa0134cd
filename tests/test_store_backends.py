"""The store is one API over two backend classes; server trouble is one line; numbers written as text sort as numbers.

Evidence: the real release (``Description.Age`` is text in every one of its 2050 image documents, 0 to 89);
pymongo's errors as pymongo raises them (``ServerSelectionTimeoutError`` for a closed port, and
``OperationFailure`` with MongoDB's code 18, AuthenticationFailed, for a refused login).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from medpix_tui import scan
from medpix_tui import store as store_module
from medpix_tui.cli import main
from medpix_tui.errors import QueryError, ServerError
from medpix_tui.store import CASES, IMAGES, REPORTS, Backend, EmbeddedBackend, ServerBackend, Store

#: A closed port: pymongo gives up after the URI's own server-selection timeout.
UNREACHABLE = "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=150"


@pytest.fixture(scope="module")
def stores(real_bundle_path: Path, server_store: Store):
    embedded = Store.open_mongita(real_bundle_path / "store")
    yield {"embedded": embedded, "server": server_store}
    embedded.close()


def test_each_engine_is_a_backend_class_behind_one_interface(stores) -> None:
    assert isinstance(stores["embedded"].backend, EmbeddedBackend)
    assert isinstance(stores["server"].backend, ServerBackend)
    assert all(isinstance(s.backend, Backend) for s in stores.values())
    with pytest.raises(TypeError):
        Backend()  # type: ignore[abstract]
    assert not any(hasattr(s, "engine") for s in stores.values()), "no engine name to branch on"
    source = inspect.getsource(store_module)
    assert "engine ==" not in source and "engine !=" not in source
    assert "_engine" not in source and "disk_engine" not in source, "mongita internals stay in mongita_readonly"


def test_a_new_backend_is_one_class(stores) -> None:
    """A backend over a plain list of documents (the snapshot evaluator) serves the whole Store API."""
    embedded = stores["embedded"]

    class ListBackend(Backend):
        def __init__(self) -> None:
            self.snaps = {c: scan.Snapshot(embedded.find(c)) for c in (IMAGES, CASES, REPORTS)}
            self.splits = [{"U_id": u, "split": s} for u, s in embedded.splits().items()]

        def find(self, collection: str, flt: dict[str, Any], sort: list[tuple[str, int]], skip: int,
                 limit: int) -> list[dict[str, Any]]:
            snap = self.snaps[collection]
            idx = snap.sort(snap.select(flt), sort)
            return [snap.docs[i] for i in (idx[skip: skip + limit] if limit else idx[skip:])]

        def count(self, collection: str, flt: dict[str, Any]) -> int:
            return len(self.snaps[collection].select(flt))

        def get(self, collection: str, value: str) -> dict[str, Any] | None:
            key = store_module.ID_FIELD[collection]
            return next((d for d in self.snaps[collection].docs if d[key] == value), None)

        def everything(self, collection: str) -> list[dict[str, Any]]:
            return self.splits if collection == store_module.SPLITS else self.snaps[collection].docs

        def images_named(self, names: list[str]) -> dict[str, dict[str, Any]]:
            wanted = set(names)
            return {d["image"]: d for d in self.snaps[IMAGES].docs if d["image"] in wanted}

        def write(self, docs: dict[str, list[dict[str, Any]]]) -> None:
            raise NotImplementedError

        def close(self) -> None:
            pass

    mine = Store(ListBackend())
    assert mine.counts() == embedded.counts()
    assert mine.count(IMAGES, mine.split_filter("test")) == 200
    assert mine.images_of_case("MPX1009") == embedded.images_of_case("MPX1009")
    assert mine.facet_counts(IMAGES, {"Type": "MR"}, ["Location Category"]) == \
        embedded.facet_counts(IMAGES, {"Type": "MR"}, ["Location Category"])


@pytest.mark.parametrize("name", ["embedded", "server"])
def test_ages_sort_as_numbers(stores, name: str) -> None:
    store = stores[name]
    for direction in (1, -1):
        ages = [int(d["Description"]["Age"]) for d in store.find(IMAGES, sort=[("Description.Age", direction)])]
        assert len(ages) == 2050 and ages == sorted(ages, reverse=direction < 0), (name, direction)
    page = store.find(REPORTS, sort=[("Description.Age", -1), ("image", 1)], skip=3, limit=4)
    whole = store.find(REPORTS, sort=[("Description.Age", -1), ("image", 1)])
    assert [d["image"] for d in page] == [d["image"] for d in whole[3:7]], "skip and limit apply after the sort"
    # other fields keep MongoDB's order: text stays text
    assert store.find(IMAGES, sort=[("U_id", -1)], limit=1)[0]["U_id"] == max(d["U_id"] for d in whole)


def test_both_backends_sort_the_same(stores) -> None:
    keys = [("Description.Age", 1), ("Type", -1)]
    got = {n: [d["image"] for d in s.find(IMAGES, {"Location Category": "Head"}, sort=keys)] for n, s in stores.items()}
    assert got["embedded"] == got["server"] and len(got["embedded"]) > 100


def test_readme_sort_example_puts_the_oldest_first(real_bundle_path: Path) -> None:
    """README: ``--sort=-Description.Age --limit 5`` (as text, age 9 came first)."""
    result = CliRunner().invoke(main, ["query", "--bundle", str(real_bundle_path), "--filter",
                                       '{"$or": [{"Type": "MR"}, {"Location Category": "Thorax"}]}',
                                       "--sort=-Description.Age", "--limit", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert [d["Description"]["Age"] for d in json.loads(result.output)] == ["89", "89", "89", "89", "87"]
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert "--sort=-Description.Age" in readme and "oldest first" in readme


def test_sort_keys_put_numbers_before_text_and_null_first() -> None:
    docs = [{"a": "10"}, {"a": "9"}, {"a": None}, {"a": "x"}, {}, {"a": 7}]
    numeric = [d.get("a") for d in scan.sort_documents(docs, [("a", 1)], frozenset({"a"}))]
    assert numeric == [None, None, 7, "9", "10", "x"]
    text = [d.get("a") for d in scan.sort_documents(docs, [("a", 1)])]
    assert text == [None, None, 7, "10", "9", "x"], "without numeric, MongoDB's order: text compares as text"
    assert scan.as_number(" 42 ") == 42 and scan.as_number("nan") is None and scan.as_number(True) is None


# -- server errors -----------------------------------------------------------------------

SERVER_COMMANDS = [
    ["show", "MPX1009"],
    ["show", "MPX1009", "--json"],
    ["query", "--limit", "2"],
    ["query", "--split", "test"],
    ["query", "--keyword", "glioma"],
    ["query", "-c", "Clinical_Reports", "--field", "Case.Title=fracture"],
    ["export", "--format", "json", "--out", "{tmp}/x.json"],
]


@pytest.mark.parametrize("args", SERVER_COMMANDS, ids=lambda a: " ".join(a))
def test_an_unreachable_server_is_one_line_exit_2(args: list[str], tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, [*args, "--mongo-uri", UNREACHABLE])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: cannot reach the MongoDB server") and result.output.count("\n") == 1
    assert "internal error" not in result.output and "Topology" not in result.output
    assert not list(tmp_path.iterdir()), "nothing written"


class _RefusingClient:
    """A pymongo-API client whose server refuses the login, as MongoDB answers (code 18) on the first operation."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __getitem__(self, name: str) -> _RefusingClient:
        return self

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        from pymongo.errors import OperationFailure

        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise OperationFailure("Authentication failed.", code=18,
                                   details={"ok": 0, "errmsg": "Authentication failed.", "code": 18})
        return refuse


@pytest.mark.parametrize("args", SERVER_COMMANDS, ids=lambda a: " ".join(a))
def test_a_refused_login_is_one_line_exit_2(args: list[str], tmp_path: Path, monkeypatch) -> None:
    import pymongo

    monkeypatch.setattr(pymongo, "MongoClient", _RefusingClient)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, [*args, "--mongo-uri", "mongodb://reader:wrong@db.example/"])
    assert result.exit_code == 2, result.output
    assert result.output == ("error: the MongoDB server refused the login or the access (--mongo-uri): "
                             "Authentication failed.\n")


def test_server_errors_in_the_library(monkeypatch) -> None:
    store = Store.from_client(_RefusingClient())
    for call in (lambda: store.get_case("MPX1009"), lambda: store.splits(), lambda: store.count(IMAGES),
                 lambda: store.find(IMAGES, sort=[("Description.Age", 1)])):
        with pytest.raises(ServerError, match="refused the login"):
            call()
    with pytest.raises(QueryError, match="invalid --mongo-uri"):
        Store.connect("mongodb://host:notaport/")
    with pytest.raises(QueryError, match="must start with mongodb:// or mongodb\\+srv://"):
        Store.connect("notauri")  # pymongo would take it for a host name and wait for it


# -- scan.py and mongomock ------------------------------------------------------------------

def test_scan_uses_only_mongomocks_public_functions() -> None:
    source = inspect.getsource(scan)
    assert "_Filterer" not in source and "_operator_map" not in source
    from mongomock import filtering

    for name in ("filter_applies", "iter_key_candidates", "resolve_sort_key", "NOTHING"):
        assert hasattr(filtering, name), f"mongomock.filtering.{name} is gone: scan.py needs a new home for it"


def test_the_mongomock_interface_behaves_as_scan_relies_on() -> None:
    doc = {"a": [{"b": "x"}, {"b": ["y", "z"]}], "s": "text", "n": None}
    assert sorted(map(str, scan.key_candidates(doc, "a.b"))) == ["['y', 'z']", "x"]
    assert list(scan.key_candidates(doc, "missing")) == []
    assert sorted(map(str, scan.values_at(doc, "a.b"))) == ["['y', 'z']", "x", "y", "z"]
    assert scan.mongo_matches({"a.b": "y"}, doc) and not scan.mongo_matches({"a.b": "w"}, doc)
    assert scan.mongo_matches({"s": {"$in": ["text", "other"]}, "n": {"$exists": True}}, doc)
    keys = sorted([{"v": "b"}, {"v": 2}, {}, {"v": None}, {"v": "a"}], key=lambda d: scan.sort_key("v", d))
    assert keys == [{}, {"v": None}, {"v": 2}, {"v": "a"}, {"v": "b"}]


def test_size_counts_arrays_only_also_inside_elem_match(stores) -> None:
    embedded = stores["embedded"]
    assert embedded.count(CASES, {"TAC": {"$size": 1}}) > 0
    assert embedded.count(IMAGES, {"Type": {"$size": 1}}) == 0, "a string is no array of size 1"
    assert embedded.count(CASES, {"TAC": {"$elemMatch": {"$size": 1}}}) == 0, "TAC holds strings, not arrays"
    assert embedded.count(CASES, {"TAC": {"$not": {"$size": 0}}}) == embedded.count(CASES, {"TAC.0": {"$exists": True}})
