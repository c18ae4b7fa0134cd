"""The document store: MedPix 2.0's three collections behind one API.

:class:`Store` is the API; where the documents live is its :class:`Backend`, one class per
engine: :class:`EmbeddedBackend` (a mongita folder inside a bundle, the default), whose
filters :mod:`medpix_tui.scan` evaluates over a snapshot (mongita 1.2 gets several operators
wrong), and :class:`ServerBackend` (any pymongo-API client: a MongoDB server via
``--mongo-uri``, or mongomock in tests), whose filters go to the server after
:func:`~medpix_tui.query.validate_filter` has refused anything that is not read-only.
"""

from __future__ import annotations

import collections
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import QueryError, ServerError
from .query import check_window, project, validate_filter, value_at
from .scan import Snapshot, sort_documents
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
#: Fields holding numbers written as text, sorted as numbers (``--sort=-Description.Age``: 89 before 9).
NUMERIC_FIELDS = frozenset({"Description.Age"})
SERVER_TIME_LIMIT_MS = 5000
SERVER_SELECTION_MS = 5000
Counts = collections.Counter[Any]
_T = TypeVar("_T")


def server_filter(flt: Any) -> Any:
    """Spell ``{"$not": {"$regex": ..}}`` as a BSON regex, the form every server accepts."""
    if isinstance(flt, list):
        return [server_filter(v) for v in flt]
    if not isinstance(flt, dict):
        return flt
    out: dict[str, Any] = {}
    for key, value in flt.items():
        if key == "$not" and isinstance(value, dict) and "$regex" in value and set(value) <= {"$regex", "$options"}:
            from bson.regex import Regex

            out[key] = Regex(value["$regex"], value.get("$options", ""))
        else:
            out[key] = server_filter(value)
    return out


def _tally(values: Iterable[Any]) -> Counts:
    """Documents per value, for values that may be arrays or objects (see :meth:`Store.facet_counts`)."""
    counts: Counts = collections.Counter()
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


class Backend(ABC):
    """Where the documents live: the engine-specific half of :class:`Store`.

    Filters reach a backend validated, collections checked and windows bounded; documents
    come back without ``_id``.
    """

    @abstractmethod
    def find(self, collection: str, flt: dict[str, Any], sort: list[tuple[str, int]],
             skip: int, limit: int) -> list[dict[str, Any]]:
        """Matching documents; ``sort`` empty means id order."""

    @abstractmethod
    def count(self, collection: str, flt: dict[str, Any]) -> int:
        """How many documents match."""

    @abstractmethod
    def get(self, collection: str, value: str) -> dict[str, Any] | None:
        """The document whose id field (:data:`ID_FIELD`) is ``value``."""

    @abstractmethod
    def everything(self, collection: str) -> list[dict[str, Any]]:
        """Every document of a collection (also :data:`SPLITS`), in any order."""

    @abstractmethod
    def images_named(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Image documents by name, for the names that exist."""

    def facet_counts(self, collection: str, flt: dict[str, Any], paths: Iterable[str]) -> dict[str, Counts]:
        """Per path, documents per value (see :meth:`Store.facet_counts`)."""
        docs = self.find(collection, flt, [], 0, 0)
        return {path: _tally(value_at(doc, path) for doc in docs) for path in paths}

    @abstractmethod
    def write(self, docs: dict[str, list[dict[str, Any]]]) -> None:
        """Replace each named collection's documents (and index :data:`INDEXES`)."""

    @abstractmethod
    def close(self) -> None:
        """Release files and connections."""


class EmbeddedBackend(Backend):
    """A mongita folder, read through an in-memory :class:`~medpix_tui.scan.Snapshot` per collection."""

    def __init__(self, path: Path, *, writable: bool = False) -> None:
        from .mongita_readonly import open_client

        self.path = Path(path)
        self._client: Any = open_client(str(path), writable=writable)
        self._snapshots: dict[str, Snapshot] = {}

    def snapshot(self, collection: str) -> Snapshot:
        """All documents of a collection in id order, loaded once."""
        if collection not in self._snapshots:
            docs = [_strip_id(d) for d in self.everything(collection)]
            docs.sort(key=lambda d: str(d.get(ID_FIELD[collection], "")))
            self._snapshots[collection] = Snapshot(docs, NUMERIC_FIELDS)
        return self._snapshots[collection]

    def everything(self, collection: str) -> list[dict[str, Any]]:
        from .mongita_readonly import stored_documents

        return stored_documents(self._client, DB_NAME, collection)

    def find(self, collection: str, flt: dict[str, Any], sort: list[tuple[str, int]],
             skip: int, limit: int) -> list[dict[str, Any]]:
        snap = self.snapshot(collection)  # already in id order
        idx = snap.sort(snap.select(flt), sort) if sort else snap.select(flt)
        idx = idx[skip: skip + limit] if limit else idx[skip:]
        return [snap.docs[i] for i in idx]

    def count(self, collection: str, flt: dict[str, Any]) -> int:
        return len(self.snapshot(collection).select(flt))

    def get(self, collection: str, value: str) -> dict[str, Any] | None:
        doc = self._client[DB_NAME][collection].find_one({ID_FIELD[collection]: value})
        return _strip_id(doc) if doc else None

    def images_named(self, names: list[str]) -> dict[str, dict[str, Any]]:
        snap = self.snapshot(IMAGES)
        column = snap.column("image")
        rows = column.rows if column else {}
        return {name: snap.docs[rows[name][0]] for name in names if name in rows}

    def facet_counts(self, collection: str, flt: dict[str, Any], paths: Iterable[str]) -> dict[str, Counts]:
        snap = self.snapshot(collection)
        idx = snap.select(flt)
        out: dict[str, Counts] = {}
        for path in paths:
            column = snap.column(path)  # a string column holds what value_at returns
            out[path] = (collections.Counter(column.values[i] for i in idx) if column
                         else _tally(value_at(snap.docs[i], path) for i in idx))
        return out

    def write(self, docs: dict[str, list[dict[str, Any]]]) -> None:
        for name, batch in docs.items():
            coll = self._client[DB_NAME][name]
            if batch:
                coll.insert_many(batch)
            for field in INDEXES[name]:
                coll.create_index(field)
        self._snapshots.clear()

    def close(self) -> None:
        from .mongita_readonly import close_client

        close_client(self._client)
        self._snapshots.clear()


def _server_error(exc: Exception) -> ServerError | QueryError:
    """One line for what a MongoDB server (or the way to it) answered."""
    from pymongo.errors import ConnectionFailure, OperationFailure

    if isinstance(exc, OperationFailure):
        message = str(exc.details.get("errmsg", exc) if exc.details else exc)
        if exc.code in (13, 18):  # Unauthorized, AuthenticationFailed
            return ServerError(f"the MongoDB server refused the login or the access (--mongo-uri): {message}")
        return QueryError(f"the server refused the query: {message}")
    if isinstance(exc, ConnectionFailure):  # also ServerSelectionTimeoutError, AutoReconnect, NetworkTimeout
        reason = " ".join(str(exc).split(", Timeout:")[0].split())
        return ServerError(f"cannot reach the MongoDB server (--mongo-uri): {reason[:300]}")
    if isinstance(exc, NotImplementedError):
        return QueryError(f"not supported by this backend: {exc}")
    return ServerError(f"database error: {' '.join(str(exc).split())[:300]}")


class ServerBackend(Backend):
    """A pymongo-API client: a MongoDB server or cluster, or mongomock in tests.

    Every call goes through :meth:`_run`, so an unreachable server, a refused login or a
    refused query is one :class:`~medpix_tui.errors.ServerError` or
    :class:`~medpix_tui.errors.QueryError` line, wherever it happens.
    """

    def __init__(self, client: Any, db_name: str = DB_NAME) -> None:
        self._client = client
        self._db = client[db_name]

    def _run(self, work: Callable[[], _T]) -> _T:
        from pymongo.errors import PyMongoError

        try:
            return work()
        except (PyMongoError, NotImplementedError) as exc:
            raise _server_error(exc) from None

    def find(self, collection: str, flt: dict[str, Any], sort: list[tuple[str, int]],
             skip: int, limit: int) -> list[dict[str, Any]]:
        def cursor(order: list[tuple[str, int]], skip: int, limit: int) -> list[dict[str, Any]]:
            found = self._db[collection].find(server_filter(flt)).sort(order).skip(skip).limit(limit)
            return [_strip_id(d) for d in found.max_time_ms(SERVER_TIME_LIMIT_MS)]

        by_id = [(ID_FIELD[collection], 1)]
        if not any(path in NUMERIC_FIELDS for path, _ in sort):
            return self._run(lambda: cursor(sort or by_id, skip, limit))
        # A server sorts numbers written as text as text; a collation would also reorder every other
        # string. MedPix is small, so such a sort runs here, with the embedded store's sort keys.
        docs = sort_documents(self._run(lambda: cursor(by_id, 0, 0)), sort, NUMERIC_FIELDS)
        return docs[skip: skip + limit] if limit else docs[skip:]

    def count(self, collection: str, flt: dict[str, Any]) -> int:
        return self._run(lambda: int(self._db[collection].count_documents(server_filter(flt),
                                                                          maxTimeMS=SERVER_TIME_LIMIT_MS)))

    def get(self, collection: str, value: str) -> dict[str, Any] | None:
        doc = self._run(lambda: self._db[collection].find_one({ID_FIELD[collection]: value}))
        return _strip_id(doc) if doc else None

    def everything(self, collection: str) -> list[dict[str, Any]]:
        return self._run(lambda: [_strip_id(d) for d in self._db[collection].find({})])

    def images_named(self, names: list[str]) -> dict[str, dict[str, Any]]:
        return {d["image"]: d for d in self.find(IMAGES, {"image": {"$in": names}}, [], 0, 0)}

    def write(self, docs: dict[str, list[dict[str, Any]]]) -> None:
        def work() -> None:
            for name, batch in docs.items():
                coll = self._db[name]
                coll.delete_many({})
                if batch:
                    coll.insert_many(batch)
                for field in INDEXES[name]:
                    coll.create_index(field)
        self._run(work)

    def close(self) -> None:
        if hasattr(self._client, "close"):
            self._client.close()


class Store:
    """MedPix 2.0's collections over a :class:`Backend`."""

    def __init__(self, backend: Backend, *, search_index: Path | None = None) -> None:
        self.backend = backend
        self._splits: dict[str, str | None] | None = None
        self._index: SearchIndex | None = None
        self._index_path = search_index

    # -- opening -------------------------------------------------------------------
    @classmethod
    def open_mongita(cls, path: Path, *, writable: bool = False, search_index: Path | None = None) -> Store:
        """Open an embedded store; read-only unless ``writable`` (only bundle build writes)."""
        return cls(EmbeddedBackend(path, writable=writable), search_index=search_index)

    @classmethod
    def connect(cls, uri: str, db_name: str = DB_NAME) -> Store:
        """Connect to a MongoDB server or cluster (``mongodb://`` or ``mongodb+srv://``).

        The connection is made on first use; a ``serverSelectionTimeoutMS`` in the URI
        replaces the default wait of :data:`SERVER_SELECTION_MS` for an unreachable server.
        """
        import pymongo
        from pymongo.errors import ConfigurationError, InvalidURI

        if not uri.startswith(("mongodb://", "mongodb+srv://")):  # pymongo reads "notauri" as a host name
            raise QueryError(f"invalid --mongo-uri {uri[:80]!r}: it must start with mongodb:// or mongodb+srv://")
        options: dict[str, Any] = ({} if "serverselectiontimeoutms" in uri.lower()
                                   else {"serverSelectionTimeoutMS": SERVER_SELECTION_MS})
        try:
            client: Any = pymongo.MongoClient(uri, **options)
        except (InvalidURI, ConfigurationError, ValueError) as exc:
            raise QueryError(f"invalid --mongo-uri: {' '.join(str(exc).split())}") from None
        return cls(ServerBackend(client, db_name))

    @classmethod
    def from_client(cls, client: Any, db_name: str = DB_NAME) -> Store:
        """Wrap an existing pymongo-API client (mongomock in tests)."""
        return cls(ServerBackend(client, db_name))

    def close(self) -> None:
        """Release files and connections."""
        self.backend.close()
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
        self.backend.write(docs)
        self._splits = None
        self._index = None
        return {name: len(batch) for name, batch in docs.items() if name != SPLITS}

    # -- reading ---------------------------------------------------------------------
    def _check_collection(self, collection: str) -> None:
        if collection not in COLLECTIONS:
            raise QueryError(f"unknown collection {collection!r}: choose one of {', '.join(COLLECTIONS)}")

    def find(self, collection: str, flt: dict[str, Any] | None = None, *, sort: list[tuple[str, int]] | None = None,
             skip: int = 0, limit: int = 0, projection: list[str] | None = None) -> list[dict[str, Any]]:
        """Documents matching a read-only filter, sorted (default: by id), paged and projected.

        :data:`NUMERIC_FIELDS` sort as numbers.
        """
        self._check_collection(collection)
        flt = validate_filter(flt or {})
        check_window(skip, limit)
        docs = self.backend.find(collection, flt, sort or [], skip, limit)
        return [project(d, projection) for d in docs] if projection else docs

    def count(self, collection: str, flt: dict[str, Any] | None = None) -> int:
        """Number of documents matching a read-only filter."""
        self._check_collection(collection)
        return self.backend.count(collection, validate_filter(flt or {}))

    def get_image(self, name: str) -> dict[str, Any] | None:
        """The ``Image_Descriptions`` document of an image, or None."""
        return self.backend.get(IMAGES, name)

    def get_case(self, uid: str) -> dict[str, Any] | None:
        """The ``Clinical_Reports`` document of a case, or None."""
        return self.backend.get(CASES, uid)

    def get_report(self, name: str) -> dict[str, Any] | None:
        """The ``Image_Reports`` document (image with its case) of an image, or None."""
        return self.backend.get(REPORTS, name)

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
            self._splits = {d["U_id"]: d.get("split") for d in self.backend.everything(SPLITS)}
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

    def keyword_search(self, text: str, *, flt: dict[str, Any] | None = None, limit: int = 50,
                       collection: str = IMAGES) -> list[tuple[float, dict[str, Any]]]:
        """Images ranked by how well their caption, case and topic match ``text``.

        ``flt`` is a filter on ``collection`` (an image collection: on ``Image_Reports`` it may
        name case fields), so a keyword search narrows the documents a field query selects.
        """
        check_window(0, limit)
        if collection not in (IMAGES, REPORTS):
            raise QueryError(f"keywords rank images: use {IMAGES} or {REPORTS}, not {collection}")
        allowed = {d["image"] for d in self.find(collection, flt, projection=["image"])} if flt else None
        hits = self.search_index().search(text, limit=limit, allowed=allowed)
        found = self.backend.images_named([name for _, name in hits])
        return [(score, found[name]) for score, name in hits if name in found]

    def facet_counts(self, collection: str, flt: dict[str, Any] | None, paths: Iterable[str]) -> dict[str, Counts]:
        """How many documents matching ``flt`` hold each value of each path (None: missing or null).

        An array counts each of its distinct elements, as a document holding that value; an
        object (or an object inside an array) is no facet value and is not counted.
        """
        self._check_collection(collection)
        return self.backend.facet_counts(collection, validate_filter(flt or {}), paths)

    def counts(self) -> dict[str, int]:
        """Documents per collection."""
        return {name: self.count(name) for name in COLLECTIONS}
