"""Field-by-field comparison of harvested documents with the release's, for the round trip and check-live.

Every leaf the release or the harvest has is one field: ``MPX1009 Case.History``,
``MPX1009 TAC``, ``MPX1009_synpic46283 Description.Caption``... Two values are identical
only when equal as JSON values, whitespace included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MISSING = "<absent>"


@dataclass(frozen=True)
class Difference:
    field: str
    release: Any
    harvested: Any

    def line(self, width: int = 70) -> str:
        return f"{self.field}: release {_short(self.release, width)} != harvested {_short(self.harvested, width)}"


def _short(value: Any, width: int) -> str:
    text = repr(value) if value is not MISSING else MISSING
    return text if len(text) <= width else text[: width - 3] + "..."


def flatten(cases: Iterable[dict[str, Any]], images: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Every compared field of some cases and image documents, by name."""
    fields: dict[str, Any] = {}
    for case in cases:
        uid = case.get("U_id")
        for part in ("Case", "Topic"):
            for key, value in (case.get(part) or {}).items():
                fields[f"{uid} {part}.{key}"] = value
        for key in ("TAC", "MRI"):
            fields[f"{uid} {key}"] = case.get(key)
    for doc in images:
        name = doc.get("image")
        for key in ("Type", "U_id", "Location", "Location Category"):
            fields[f"{name} {key}"] = doc.get(key, MISSING)
        for key, value in (doc.get("Description") or {}).items():
            fields[f"{name} Description.{key}"] = value
    return fields


def compare(release: dict[str, Any], harvested: dict[str, Any],
            only: Iterable[str] | None = None) -> tuple[int, list[Difference]]:
    """(fields compared, differences); ``only`` limits the comparison to fields whose name ends with one of them."""
    names = sorted(set(release) | set(harvested))
    if only is not None:
        suffixes = tuple(only)
        names = [n for n in names if n.endswith(suffixes)]
    diffs = [Difference(n, release.get(n, MISSING), harvested.get(n, MISSING)) for n in names
             if release.get(n, MISSING) != harvested.get(n, MISSING)]
    return len(names), diffs
