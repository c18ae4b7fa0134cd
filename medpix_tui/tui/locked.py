"""The bundle for long work in a thread: each store call under the app's store lock, nothing else.

The quality report decodes every image for seconds; holding the store lock all that time
would stall every search behind it. Through :class:`LockedBundle` the report holds the
lock only while it reads documents (mongita is not thread-safe), and decodes pixels without it.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from ..bundle import Bundle


class LockedStore:
    """A store whose every method call takes ``lock`` (attributes pass through)."""

    def __init__(self, store: Any, lock: threading.Lock) -> None:
        self._store = store
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return call


class LockedBundle:
    """A bundle whose store is a :class:`LockedStore`; opening the store takes the lock too."""

    def __init__(self, bundle: Bundle, lock: threading.Lock) -> None:
        self._bundle = bundle
        with lock:
            self.store = LockedStore(bundle.store, lock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bundle, name)


def locked(bundle: Bundle, lock: threading.Lock) -> Bundle:
    """``bundle`` as the library's functions take it, its store calls serialised by ``lock``."""
    return cast(Bundle, LockedBundle(bundle, lock))
