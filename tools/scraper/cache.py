"""On-disk cache of raw HTTP responses, so an interrupted or repeated harvest fetches nothing twice.

Each response is one file named by the sha256 of its URL, ``<hh>/<hash>.resp``: a line of
JSON metadata (URL, content type, body size) then the raw body. It is written to a
temporary name and renamed, so a crash never leaves an entry that reads back truncated;
an entry whose size or URL does not match is ignored and fetched again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from medpix_tui.atomic import write_atomic


@dataclass(frozen=True)
class Fetched:
    """One successful response, from the network or from the cache."""

    url: str
    content: bytes
    content_type: str
    from_cache: bool = False

    @property
    def text(self) -> str:
        """The body decoded with the declared charset (UTF-8 when none), never raising."""
        charset = "utf-8"
        for part in self.content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")


class ResponseCache:
    """Raw responses keyed by URL hash under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, url: str) -> Path:
        """Where the response for ``url`` is stored."""
        digest = hashlib.sha256(url.encode("utf-8")).hexdigest()
        return self.root / digest[:2] / f"{digest}.resp"

    def get(self, url: str) -> Fetched | None:
        """The cached response for ``url``, or None when absent or damaged."""
        try:
            head, _, body = self.path(url).read_bytes().partition(b"\n")
            meta = json.loads(head)
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("url") != url or meta.get("size") != len(body):
            return None
        return Fetched(url, body, str(meta.get("content_type", "")), from_cache=True)

    def put(self, url: str, content: bytes, content_type: str) -> None:
        """Store a response atomically."""
        path = self.path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"url": url, "content_type": content_type, "size": len(content), "fetched_at": time.time()}
        write_atomic(path, json.dumps(meta).encode("utf-8") + b"\n" + content)

    def forget(self, url: str) -> None:
        """Drop an entry whose content proved unusable, so the next run fetches it again."""
        self.path(url).unlink(missing_ok=True)
