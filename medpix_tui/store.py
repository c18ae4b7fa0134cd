"""The document store: MedPix 2.0's three collections behind one API.

:class:`Store` runs the same code over an embedded mongita database (the default, inside a
bundle) and over any pymongo-API client (a MongoDB server via ``--mongo-uri``, or mongomock
in tests). With mongita, filters are evaluated by :mod:`medpix_tui.scan` over a snapshot
(mongita 1.2 gets several operators wrong); with pymongo they go to the server after
:func:`~medpix_tui.query.validate_filter` has refused anything that is not read-only.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import QueryError
from .query import check_window, project, validate_filter, value_at
from .scan import Snapshot
from .search import SearchIndex

if TYPE_CHECKING:
    from .source import SourceData

DB_NAME = "medpix"
IMAGES = "Image_Descriptions"
CASES = "Clinical_Reports"
REPORTS = "Image_Reports"
SPLITS = "Splits"
COLLECTIONS = (IMAGES, CASES, REPORTS)
ID_FIELD = {IMAGES: "image", CASES: "U_id", REPORTS: "image", SPLITS: "U_id"}
INDEXES = {
    IMAGES: ("image", "U_id", "Type", "Location Category"),
    CASES: ("U_id",),
    REPORTS: ("image", "U_id", "Type", "Location Category"),
    SPLITS: ("U_id",),
}
SERVER_TIME_LIMIT_MS = 5000


def server_filter(flt: Any) -> Any:
    """Spell ``{"$not": {"$regex": ..}}`` as a BSON regex, the form every server accepts."""
    if isinstance(flt, list):
        return [server_filter(v) for v in flt]
    if not isinstance(flt, dict):
        return flt
    out = {}
    for key, value in flt.items():
        if key == "$not" and isinstance(value, dict) and "$regex" in value and set(value) <= {"$regex", "$options"}:
            from bson.regex import Regex

            out[key] = Regex(value["$regex"], value.get("$options", ""))
        else:
            out[key] = server_filter(value)
    return out


def _tally(values: Iterable[Any]) -> collections.Counter:
    """Documents per value, for values that may be arrays or objects (see :meth:`Store.facet_counts`)."""
    counts: collections.Counter = collections.Counter()
    for value in values:
        if isinstance(value, list):
            counts.update({v for v in value if not isinstance(v, (dict, list))})
        elif not isinstance(value, dict):
            counts[value] += 1
    return counts


def _strip_id(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_id"}


def image_report(image: dict[str, Any], case: dict[str, Any] | None) -> dict[str, Any]:
    """An ``Image_Reports`` document: the image joined with its case's Case and Topic."""
    doc = dict(image)
    doc["Case"] = (case or {}).get("Case", {})
    doc["Topic"] = (case or {}).get("Topic", {})
    return doc


class Store:
    """MedPix 2.0 collections over mongita or a pymongo-API database."""

    def __init__(self, db: Any, *, engine: str, client: Any = None) -> None:
        self.db = db
        self.engine = engine
        self._client = client
        self._snapshots: dict[str, Snapshot] = {}
        self._splits: dict[str, str | None] | None = None
        self._index: SearchIndex | None = None
        self._index_path: Path | None = None

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open_mongita(cls, path: Path, *, writable: bool = False, search_index: Path | None = None) -> Store:
        """Open an embedded store; read-only unless ``writable`` (only bundle build writes)."""
        from mongita.mongita_client import MongitaClientDisk

        from .mongita_readonly import ReadOnlyMongitaClient

        client = MongitaClientDisk(str(path)) if writable else ReadOnlyMongitaClient(str(path))
        store = cls(client[DB_NAME], engine="mongita", client=client)
        store._index_path = search_index
        return store

    @classmethod
    def connect(cls, uri: str, db_name: str = DB_NAME) -> Store:
        """Connect to a MongoDB server or cluster (``mongodb://`` or ``mongodb+srv://``)."""
        import pymongo
        from pymongo.errors import ConfigurationError, InvalidURI

        try:
            client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
        except (InvalidURI, ConfigurationError, ValueError) as exc:
            raise QueryError(f"invalid --mongo-uri: {exc}") from None
        return cls(client[db_name], engine="pymongo", client=client)

    @classmethod
    def from_client(cls, client: Any, db_name: str = DB_NAME) -> Store:
        """Wrap an existing pymongo-API client (mongomock in tests)."""
        return cls(client[db_name], engine="pymongo", client=client)

    def close(self) -> None:
        """Release files and connections."""
        if self.engine == "mongita" and self._client is not None:
            self._client.engine.close()
            from mongita.engines import disk_engine

            disk_engine.DISK_ENGINE_INCUMBENTS.pop(self._client.engine.base_storage_path, None)
        elif self._client is not None and hasattr(self._client, "close"):
            self._client.close()
        self._snapshots.clear()
        if self._index is not None:
            self._index.close()
            self._index = None

    # -- writing (bundle build, server load) -----------------------------------------
    def load(self, source: SourceData) -> dict[str, int]:
        """Write the release's collections, the materialised join and the splits; return counts."""
        case_by_id = {c["U_id"]: c for c in source.cases}
        docs = {
            IMAGES: [dict(d, _id=d["image"]) for d in source.images],
            CASES: [dict(c, _id=c["U_id"]) for c in source.cases],
            REPORTS: [dict(image_report(d, case_by_id.get(d["U_id"])), _id=d["image"]) for d in source.images],
            SPLITS: [{"_id": uid, "U_id": uid, "split": split} for uid, split in source.splits.items()],
        }
        for name, batch in docs.items():
            coll = self.db[name]
            if self.engine == "pymongo":
                coll.delete_many({})
            if batch:
                coll.insert_many(batch)
            for field in INDEXES[name]:
                coll.create_index(field)
        self._snapshots.clear()
        self._splits = None
        self._index = None
        return {name: len(batch) for name, batch in docs.items() if name != SPLITS}

    # -- reading ---------------------------------------------------------------------
    def _check_collection(self, collection: str) -> None:
        if collection not in COLLECTIONS:
            raise QueryError(f"unknown collection {collection!r}: choose one of {', '.join(COLLECTIONS)}")

    def snapshot(self, collection: str) -> Snapshot:
        """All documents of a collection, loaded once through mongita."""
        if collection not in self._snapshots:
            docs = [_strip_id(d) for d in self._all_documents(collection)]
            if collection in ID_FIELD:
                docs.sort(key=lambda d: str(d.get(ID_FIELD[collection], "")))
            self._snapshots[collection] = Snapshot(docs)
        return self._snapshots[collection]

    def _all_documents(self, collection: str) -> list[dict[str, Any]]:
        """Every stored document, as mongita's engine decoded and cached it.

        mongita's ``find`` deep-copies each document it yields, which took two thirds of the
        time the first search of the terminal UI waits for. The snapshot is never written to,
        so it can share the engine's copies (through the engine's own ``list_ids`` and
        ``get_doc``, the interface the read-only engine already builds on).
        """
        coll = self.db[collection]
        engine, name = coll._engine, coll.full_name
        return [engine.get_doc(name, doc_id) for doc_id in engine.list_ids(name)]

    def find(self, collection: str, flt: dict[str, Any] | None = None, *, sort: list[tuple[str, int]] | None = None,
             skip: int = 0, limit: int = 0, projection: list[str] | None = None) -> list[dict[str, Any]]:
        """Documents matching a read-only filter, sorted (default: by id), paged and projected."""
        self._check_collection(collection)
        flt = validate_filter(flt or {})
        check_window(skip, limit)
        if self.engine == "mongita":
            snap = self.snapshot(collection)  # already in id order
            idx = snap.sort(snap.select(flt), sort) if sort else snap.select(flt)
            idx = idx[skip: skip + limit] if limit else idx[skip:]
            docs = [snap.docs[i] for i in idx]
        else:
            sort = sort or [(ID_FIELD[collection], 1)]
            cursor = self.db[collection].find(server_filter(flt)).sort(sort).skip(skip).limit(limit)
            docs = [_strip_id(d) for d in self._server(cursor)]
        return [project(d, projection) for d in docs] if projection else docs

    def count(self, collection: str, flt: dict[str, Any] | None = None) -> int:
        """Number of documents matching a read-only filter."""
        self._check_collection(collection)
        flt = validate_filter(flt or {})
        if self.engine == "mongita":
            return len(self.snapshot(collection).select(flt))
        return self._server(lambda: self.db[collection].count_documents(server_filter(flt), maxTimeMS=SERVER_TIME_LIMIT_MS))

    def _server(self, work: Any) -> Any:
        """Run server work, turning server-side errors into one-line query errors."""
        from pymongo.errors import OperationFailure, PyMongoError

        try:
            if callable(work):
                return work()
            return list(work.max_time_ms(SERVER_TIME_LIMIT_MS) if hasattr(work, "max_time_ms") else work)
        except OperationFailure as exc:
            raise QueryError(f"the server refused the query: {exc.details.get('errmsg', exc) if exc.details else exc}") from None
        except NotImplementedError as exc:
            raise QueryError(f"not supported by this backend: {exc}") from None
        except PyMongoError as exc:
            raise QueryError(f"database error: {exc}") from None

    def _by_id(self, collection: str, value: str) -> dict[str, Any] | None:
        doc = self.db[collection].find_one({ID_FIELD[collection]: value})
        return _strip_id(doc) if doc else None

    def get_image(self, name: str) -> dict[str, Any] | None:
        """The ``Image_Descriptions`` document of an image, or None."""
        return self._by_id(IMAGES, name)

    def get_case(self, uid: str) -> dict[str, Any] | None:
        """The ``Clinical_Reports`` document of a case, or None."""
        return self._by_id(CASES, uid)

    def get_report(self, name: str) -> dict[str, Any] | None:
        """The ``Image_Reports`` document (image with its case) of an image, or None."""
        return self._by_id(REPORTS, name)

    def images_of_case(self, uid: str) -> list[dict[str, Any]]:
        """The case's images in the order its TAC and MRI lists give."""
        case = self.get_case(uid)
        if case is None:
            return []
        docs = {d["image"]: d for d in self.find(IMAGES, {"U_id": uid})}
        return [docs[n] for n in (*case.get("TAC", []), *case.get("MRI", [])) if n in docs]

    def splits(self) -> dict[str, str | None]:
        """U_id -> the authors' split (train, dev, test) or None."""
        if self._splits is None:
            docs = self._all_documents(SPLITS) if self.engine == "mongita" else self.db[SPLITS].find({})
            self._splits = {d["U_id"]: d.get("split") for d in docs}
        return self._splits

    def split_of(self, uid: str) -> str | None:
        """The authors' split of a case."""
        return self.splits().get(uid)

    def split_filter(self, *splits: str) -> dict[str, Any]:
        """A filter selecting the images (or cases) of the given splits."""
        return {"U_id": {"$in": sorted(u for u, s in self.splits().items() if s in splits)}}

    def search_index(self) -> SearchIndex:
        """The keyword index: the bundle's prebuilt file when given, else built in memory once."""
        if self._index is None:
            if self._index_path is not None and self._index_path.exists():
                self._index = SearchIndex.open(self._index_path)
            else:
                self._index = SearchIndex.build(self.find(IMAGES), self.find(CASES))
        return self._index

    def keyword_search(self, text: str, *, flt: dict[str, Any] | None = None, limit: int = 50) -> list[tuple[float, dict[str, Any]]]:
        """Images ranked by how well their caption, case and topic match ``text``."""
        check_window(0, limit)
        allowed = {d["image"] for d in self.find(IMAGES, flt, projection=["image"])} if flt else None
        hits = self.search_index().search(text, limit=limit, allowed=allowed)
        if self.engine == "mongita":
            snap = self.snapshot(IMAGES)
            column = snap.column("image")
            by_name = column.rows if column else {}
            return [(score, snap.docs[by_name[name][0]]) for score, name in hits if name in by_name]
        found = {d["image"]: d for d in self.find(IMAGES, {"image": {"$in": [n for _, n in hits]}})}
        return [(score, found[name]) for score, name in hits if name in found]

    def facet_counts(self, collection: str, flt: dict[str, Any] | None, paths: Iterable[str]) -> dict[str, collections.Counter]:
        """How many documents matching ``flt`` hold each value of each path (None: missing or null).

        An array counts each of its distinct elements, as a document holding that value; an
        object (or an object inside an array) is no facet value and is not counted.
        """
        if self.engine != "mongita":
            docs = self.find(collection, flt)
            return {path: _tally(value_at(doc, path) for doc in docs) for path in paths}
        self._check_collection(collection)
        snap = self.snapshot(collection)
        idx = snap.select(validate_filter(flt or {}))
        out: dict[str, collections.Counter] = {}
        for path in paths:
            column = snap.column(path)  # a string column holds what value_at returns
            out[path] = (collections.Counter(column.values[i] for i in idx) if column
                         else _tally(value_at(snap.docs[i], path) for i in idx))
        return out

    def counts(self) -> dict[str, int]:
        """Documents per collection."""
        return {name: self.count(name) for name in COLLECTIONS}
