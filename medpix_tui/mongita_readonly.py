"""mongita, the embedded engine: opened read-only for reading, and the only module that knows its internals.

Kept apart from :mod:`medpix_tui.store` so that importing the store costs nothing until a
database is opened: mongita imports pymongo at package level (about a quarter of a second),
which the terminal UI's first screen does not need. Everything the store needs from mongita
beyond its public client API (sharing the engine's decoded documents, releasing the engine's
per-folder singleton) lives here, next to the read-only engine that builds on the same calls.
"""

from __future__ import annotations

import os
from typing import Any

from mongita.engines import disk_engine
from mongita.engines.disk_engine import DiskEngine
from mongita.mongita_client import MongitaClient, MongitaClientDisk

from .errors import BundleError


class ReadOnlyDiskEngine(DiskEngine):
    """mongita's disk engine with data files opened read-only and every write refused.

    mongita opens its files ``rb+``, which fails in a read-only bundle for anyone but root
    and would let a reader modify a bundle it only meant to read.
    """

    def _get_coll_fh(self, collection: str) -> Any:
        try:
            return self._collection_fhs[collection]
        except KeyError:
            pass
        fh = open(self._get_full_path(collection, "$.data"), "rb")  # the engine keeps it open until close()
        self._collection_fhs[collection] = fh
        return fh

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise BundleError("the store is read-only: build a new bundle to change it")

    put_doc = delete_doc = put_metadata = delete_dir = create_path = _refuse


class ReadOnlyMongitaClient(MongitaClient):
    """A mongita client over :class:`ReadOnlyDiskEngine`, private to this process."""

    def __init__(self, path: str) -> None:
        if not os.path.isdir(path):
            raise BundleError(f"store folder not found: {path}")
        self.engine = ReadOnlyDiskEngine(path)
        self.is_primary = True
        super().__init__()


def open_client(path: str, *, writable: bool = False) -> Any:
    """A client over the store folder ``path``: read-only unless ``writable`` (only bundle build writes)."""
    return MongitaClientDisk(path) if writable else ReadOnlyMongitaClient(path)


def stored_documents(client: Any, db_name: str, collection: str) -> list[dict[str, Any]]:
    """Every stored document of a collection, as mongita's engine decoded and cached it.

    mongita's ``find`` deep-copies each document it yields, which took two thirds of the
    time the first search of the terminal UI waits for. A caller that never writes to the
    documents can share the engine's copies, through the engine's own ``list_ids`` and
    ``get_doc`` (the interface :class:`ReadOnlyDiskEngine` already builds on).
    """
    engine, name = client.engine, client[db_name][collection].full_name
    return [engine.get_doc(name, doc_id) for doc_id in engine.list_ids(name)]


def close_client(client: Any) -> None:
    """Close the engine's files and forget its per-folder singleton, so the folder can be opened again."""
    client.engine.close()
    disk_engine.DISK_ENGINE_INCUMBENTS.pop(client.engine.base_storage_path, None)
