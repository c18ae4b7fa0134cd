"""Ranked keyword search across image captions and their case and topic text.

The index is SQLite FTS5 (in Python's standard library): BM25 ranking, prefix matching
("enhanc" finds "enhancing") and per-column weights, so a caption or a diagnosis counts more
than a long discussion. An image's score is its own BM25 plus half its case's, so images
whose caption matches rank ahead of the other images of a matching case. A bundle ships
the index prebuilt (``search.sqlite``); otherwise it is built in memory on first use.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import QueryError
from .query import value_at

#: column -> (dotted path in the document, BM25 weight)
IMAGE_COLUMNS: dict[str, tuple[str, float]] = {
    "caption": ("Description.Caption", 3.0), "location": ("Location", 2.0),
    "category": ("Location Category", 1.0), "modality": ("Description.Modality", 1.0),
    "plane": ("Description.Plane", 0.5),
}
CASE_COLUMNS: dict[str, tuple[str, float]] = {
    "title": ("Case.Title", 3.0), "diagnosis": ("Case.Case Diagnosis", 3.0), "topic": ("Topic.Title", 2.5),
    "keywords": ("Topic.Keywords", 2.0), "findings": ("Case.Findings", 1.5),
    "ddx": ("Case.Differential Diagnosis", 1.0),
    "history": ("Case.History", 1.0), "exam": ("Case.Exam", 0.5), "discussion": ("Case.Discussion", 0.5),
    "treatment": ("Case.Treatment & Follow Up", 0.5), "disease": ("Topic.Disease Discussion", 0.5),
    "acr_category": ("Topic.Category", 1.0), "acr_code": ("Topic.ACR Code", 1.0),
}
CASE_SHARE = 0.5
_IMAGE_SCORES = (f"SELECT image, -bm25(images, 0, {', '.join(str(w) for _, w in IMAGE_COLUMNS.values())}) "
                 "FROM images WHERE images MATCH ?")
#: Each matching case lends its score to its images, joined in SQL (no parameter per case).
_CASE_SCORES_BY_IMAGE = (f"SELECT ic.image, m.score FROM (SELECT u_id, "
                         f"-bm25(cases, 0, {', '.join(str(w) for _, w in CASE_COLUMNS.values())}) AS score "
                         "FROM cases WHERE cases MATCH ?) AS m JOIN image_case AS ic ON ic.u_id = m.u_id")
MAX_TERMS = 12
_WORD = re.compile(r"\w+", re.UNICODE)
_TOKENIZER = "unicode61 remove_diacritics 2"


def terms_of(text: str) -> list[str]:
    """Lower-case search words, in order, without repeats."""
    terms = list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if len(w) >= 2 or w.isdigit()))
    if not terms:
        raise QueryError("keyword search needs at least one word")
    if len(terms) > MAX_TERMS:
        raise QueryError(f"too many search words ({len(terms)}, at most {MAX_TERMS})")
    return terms


def _text(doc: dict[str, Any], path: str) -> str:
    value = value_at(doc, path)
    return value if isinstance(value, str) else ""


class SearchIndex:
    """An FTS5 index of images and cases answering ranked keyword queries."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def build(cls, images: Iterable[dict[str, Any]], cases: Iterable[dict[str, Any]],
              path: Path | None = None) -> SearchIndex:
        """Index documents, in memory or into a new file at ``path``."""
        conn = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False)
        conn.execute(f"CREATE VIRTUAL TABLE images USING fts5(image UNINDEXED, {', '.join(IMAGE_COLUMNS)}, "
                     f"tokenize='{_TOKENIZER}')")
        conn.execute(f"CREATE VIRTUAL TABLE cases USING fts5(u_id UNINDEXED, {', '.join(CASE_COLUMNS)}, "
                     f"tokenize='{_TOKENIZER}')")
        conn.execute("CREATE TABLE image_case (image TEXT PRIMARY KEY, u_id TEXT NOT NULL)")
        conn.execute("CREATE INDEX image_case_uid ON image_case (u_id)")
        images = list(images)
        conn.executemany(f"INSERT INTO images VALUES ({', '.join('?' * (len(IMAGE_COLUMNS) + 1))})",
                         ([d["image"], *(_text(d, p) for p, _ in IMAGE_COLUMNS.values())] for d in images))
        conn.executemany(f"INSERT INTO cases VALUES ({', '.join('?' * (len(CASE_COLUMNS) + 1))})",
                         ([d["U_id"], *(_text(d, p) for p, _ in CASE_COLUMNS.values())] for d in cases))
        conn.executemany("INSERT INTO image_case VALUES (?, ?)", ((d["image"], d["U_id"]) for d in images))
        conn.commit()
        return cls(conn)

    @classmethod
    def open(cls, path: Path) -> SearchIndex:
        """Open a prebuilt index read-only (it may sit in a read-only bundle)."""
        uri = f"file:{Path(path).resolve().as_posix()}?mode=ro&immutable=1"
        return cls(sqlite3.connect(uri, uri=True, check_same_thread=False))

    def close(self) -> None:
        """Close the database."""
        self.conn.close()

    def search(self, text: str, *, limit: int = 50, allowed: set[str] | None = None) -> list[tuple[float, str]]:
        """``(score, image)`` pairs, best first; ``allowed`` restricts to those images."""
        match = " OR ".join(f'"{t}"*' for t in terms_of(text))
        try:
            scores = dict(self.conn.execute(_IMAGE_SCORES, (match,)))
            case_rows = self.conn.execute(_CASE_SCORES_BY_IMAGE, (match,)).fetchall()
        except sqlite3.Error as exc:
            raise QueryError(f"keyword search failed: {exc}") from None
        for image, score in case_rows:
            scores[image] = scores.get(image, 0.0) + CASE_SHARE * score
        ranked = sorted(((s, i) for i, s in scores.items() if allowed is None or i in allowed),
                        key=lambda p: (-p[0], p[1]))
        return ranked[:limit] if limit else ranked
