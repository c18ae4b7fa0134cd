"""mongita opened read-only: a bundle's store is read, never written.

Kept apart from :mod:`medpix_tui.store` so that importing the store costs nothing until a
database is opened: mongita imports pymongo at package level (about a quarter of a second),
which the terminal UI's first screen does not need.
"""

from __future__ import annotations

import os
from typing import Any

from mongita.engines.disk_engine import DiskEngine
from mongita.mongita_client import MongitaClient

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
        fh = open(self._get_full_path(collection, "$.data"), "rb")
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
