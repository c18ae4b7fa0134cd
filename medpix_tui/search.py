"""Ranked keyword search across image captions and their case and topic text.

The index is SQLite FTS5 (in Python's standard library): BM25 ranking and per-column
weights, so a caption or a diagnosis counts more than a long discussion. An image's score is
its own BM25 plus half its case's, so images whose caption matches rank ahead of the other
images of a matching case. A bundle ships the index prebuilt (``search.sqlite``); otherwise
it is built in memory on first use.

What people type (:func:`parse_keywords`), the one syntax of the TUI and ``query --keyword``:

- ``ring enhancing lesion``: every word must occur (in the image's caption or facts, or in
  its case or topic text: an image and its case are read as one document);
- ``"ring enhancing"``: the words side by side, in that order;
- ``glioma OR astrocytoma``: either;
- ``-metastasis`` (or ``NOT metastasis``): images whose text holds the word are left out;
- ``AND`` between words says what the space already does; ``OR``, ``AND`` and ``NOT`` are
  operators in capitals only (``and`` and ``not`` are searched as words);
- ``enhanc*``: any word that starts so (without ``*`` a word matches whole words only).

The user's text never reaches FTS5 as typed: each word becomes a quoted FTS5 string of
letters and digits, so no input can form an FTS5 operator or a syntax error.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Term:
    """One searched word or phrase: its words, whether the last one is a prefix."""

    words: tuple[str, ...]
    prefix: bool = False

    def fts(self) -> str:
        """The term as an FTS5 phrase (quoted words: safe whatever was typed)."""
        return " + ".join(f'"{w}"' for w in self.words) + ("*" if self.prefix else "")

    def pattern(self) -> str:
        """A regex finding the term in text (for highlighting), as FTS5's tokenizer would."""
        parts = [re.escape(w) for w in self.words]
        tail = r"\w*" if self.prefix else r"(?!\w)"
        return r"(?<!\w)" + r"\W+".join(parts) + tail


@dataclass(frozen=True)
class KeywordQuery:
    """Parsed keywords: every group must match (a group matches when any of its terms does); no excluded term may."""

    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...] = ()
    #: What was typed but searches nothing (no letters or digits, or one letter), so a status line can say so.
    ignored: tuple[str, ...] = ()

    @property
    def terms(self) -> tuple[Term, ...]:
        return tuple(t for g in self.groups for t in g)

    def any_match(self) -> str:
        """Every searched term ORed: what ranks the hits (each term that occurs adds to the score)."""
        return " OR ".join(t.fts() for t in self.terms)

    def group_match(self, group: tuple[Term, ...]) -> str:
        return " OR ".join(t.fts() for t in group)

    def highlight_pattern(self) -> str:
        """One regex over every searched term, for marking hits in shown text (case-insensitive)."""
        return "|".join(t.pattern() for t in sorted(self.terms, key=lambda t: -len(" ".join(t.words))))


_TOKEN = re.compile(r'(-?)"([^"]*)("?)|(\S+)')
#: Boolean words, in capitals as search engines write them (``or`` in lower case is a word)
_OPERATORS = frozenset({"OR", "AND", "NOT"})


def _term(text: str, *, phrase: bool) -> Term | None:
    """A typed word or phrase as a Term (None when it holds no letters or digits)."""
    prefix = text.rstrip().endswith("*")
    words = tuple(w for w in _WORD.findall(text.lower()))
    if not phrase and len(words) == 1 and len(words[0]) < 2 and not words[0].isdigit() and not prefix:
        return None  # one letter would match half the dataset
    return Term(words, prefix) if words else None


class NoKeyword(QueryError):
    """Keywords that hold nothing to look for: ``why`` is ``excludes`` (only -word), ``short`` (one
    letter) or ``signs`` (no letter or digit). A search run as the user types lists every image then."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


@functools.lru_cache(maxsize=64)
def parse_keywords(text: str) -> KeywordQuery:
    """Parse what was typed (the syntax in this module's docstring); QueryError says what to change.

    Compatibility forms are folded first (NFKC): a word pasted from a PDF with a ligature
    ("ﬁbrosis") or in full-width letters matches as typed plainly. Cached: a search as the user
    types asks for the same text's parse several times per keystroke (request, hint, highlight).
    """
    text = unicodedata.normalize("NFKC", text)
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    ignored: list[str] = []
    join_next = negate_next = False
    for match in _TOKEN.finditer(text):
        negate, phrase, _closed, word = match.groups()
        if word in _OPERATORS:
            if word == "OR":
                join_next = bool(groups)
            elif word == "NOT":
                negate_next = True
            continue  # AND is what the space already means
        if phrase is not None:
            term = _term(phrase + ("*" if match.end() < len(text) and text[match.end()] == "*" else ""), phrase=True)
        else:
            negate = "-" if word.startswith("-") and len(word) > 1 else ""
            term = _term(word.removeprefix("-") if negate else word, phrase=False)
        if term is None:
            ignored.append(match.group(0))
            continue
        if negate_next:
            negate, negate_next = "-", False
        if negate:
            excluded.append(term)
            join_next = False
        elif join_next and groups:
            groups[-1].append(term)
            join_next = False
        else:
            groups.append([term])
    if not groups:
        if excluded:
            raise NoKeyword("keywords only exclude (-word): add a word to look for", "excludes")
        if any(c.isalnum() for word in text.split() if word not in _OPERATORS for c in word):  # "a", "x y": too short
            raise NoKeyword("keyword search needs a word of 2 letters or more (one letter would match half the "
                            "dataset), e.g. glioma", "short")
        raise NoKeyword("keyword search needs at least one word: type letters or digits, e.g. glioma", "signs")
    count = sum(len(g) for g in groups) + len(excluded)
    if count > MAX_TERMS:
        raise QueryError(f"too many search words ({count}, at most {MAX_TERMS}): remove some")
    return KeywordQuery(tuple(tuple(dict.fromkeys(g)) for g in groups), tuple(dict.fromkeys(excluded)),
                        tuple(dict.fromkeys(ignored)))


def not_yet_searchable(text: str) -> str | None:
    """Why typed keywords search nothing yet (None when they do), for a search run as the user types.

    A lone sign, a word still being typed or only ``-word`` lists every image meanwhile, with
    this reason beside it, rather than an error at each keystroke; too many words stays an error.
    """
    typed = text.strip()
    if not typed:
        return None
    if len(typed) < 2 and typed.isalnum():
        return "keywords count from 2 letters"
    try:
        parse_keywords(typed)
    except NoKeyword as exc:
        if exc.why == "excludes":
            return f"{typed} only excludes: add a word to look for"
        if exc.why == "short":
            return "keywords count from 2 letters"
        return f"{typed} alone is no keyword: type letters or digits"
    except QueryError:  # too many words: the search itself says so
        pass
    return None


def keyword_hint(text: str) -> str:
    """What a status line says of typed keywords: why they search nothing yet, or what in them is
    not searched (a lone sign, an emoji, one letter); empty when every word counts."""
    if (why := not_yet_searchable(text)) is not None:
        return why
    try:
        ignored = parse_keywords(text).ignored if text.strip() else ()
    except QueryError:
        return ""
    return f"not searched: {' '.join(ignored)}" if ignored else ""


def terms_of(text: str) -> list[str]:
    """Lower-case searched words, in order, without repeats (excluded words are not searched)."""
    return list(dict.fromkeys(w for t in parse_keywords(text).terms for w in t.words))


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
        """``(score, image)`` pairs, best first; ``allowed`` restricts to those images.

        Only images whose own text and case text together satisfy the query are returned;
        they rank by the score of every searched term that occurs (BM25, as before).
        """
        query = parse_keywords(text)
        try:
            scores = dict(self.conn.execute(_IMAGE_SCORES, (query.any_match(),)))
            case_rows = self.conn.execute(_CASE_SCORES_BY_IMAGE, (query.any_match(),)).fetchall()
            for image, score in case_rows:
                scores[image] = scores.get(image, 0.0) + CASE_SHARE * score
            keep = set(scores)
            for group in query.groups:
                keep &= self._images_matching(query.group_match(group))
            for term in query.excluded:
                keep -= self._images_matching(term.fts())
        except sqlite3.Error as exc:
            raise QueryError(f"keyword search failed: {exc}") from None
        ranked = sorted(((s, i) for i, s in scores.items() if i in keep and (allowed is None or i in allowed)),
                        key=lambda p: (-p[0], p[1]))
        return ranked[:limit] if limit else ranked

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` (of two characters or more) that occur in no image's or case's text:
        a search by meaning ranks them anyway, by what its text model makes of the letters."""
        words = dict.fromkeys(w for w in _WORD.findall(unicodedata.normalize("NFKC", text).lower()) if len(w) >= 2)
        try:
            return [w for w in words if not self._images_matching(Term((w,)).fts())]
        except sqlite3.Error:
            return []

    def _images_matching(self, match: str) -> set[str]:
        """Images whose own text, or their case's, matches an FTS5 expression."""
        own = {row[0] for row in self.conn.execute("SELECT image FROM images WHERE images MATCH ?", (match,))}
        by_case = self.conn.execute("SELECT ic.image FROM image_case AS ic WHERE ic.u_id IN "
                                    "(SELECT u_id FROM cases WHERE cases MATCH ?)", (match,))
        return own | {row[0] for row in by_case}

    def snippets(self, text: str, images: Iterable[str], *, tokens: int = 10) -> dict[str, str]:
        """Where each image's hit is: a few words around it, hits between \x01 and \x02.

        From the image's own text when it matches there, else from its case's.
        """
        names = list(images)
        if not names:
            return {}
        match = parse_keywords(text).any_match()
        out: dict[str, str] = {}
        try:
            for start in range(0, len(names), 500):
                chunk = names[start:start + 500]
                marks = ", ".join("?" * len(chunk))
                for image, snippet in self.conn.execute(
                        f"SELECT image, snippet(images, -1, char(1), char(2), '…', {int(tokens)}) FROM images "
                        f"WHERE images MATCH ? AND image IN ({marks})", (match, *chunk)):
                    out[image] = snippet
                for image, snippet in self.conn.execute(
                        f"SELECT ic.image, snippet(cases, -1, char(1), char(2), '…', {int(tokens)}) FROM cases "
                        "JOIN image_case AS ic ON ic.u_id = cases.u_id "
                        f"WHERE cases MATCH ? AND ic.image IN ({marks})", (match, *chunk)):
                    out.setdefault(image, snippet)
        except sqlite3.Error as exc:
            raise QueryError(f"keyword search failed: {exc}") from None
        return out
