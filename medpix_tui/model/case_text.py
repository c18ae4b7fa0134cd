"""Similar cases from a history: MiniLM sentence embeddings of each case's history and findings.

A physician with a patient in front of them types the history; the cases whose history and
findings read most alike come back, ranked by cosine between all-MiniLM-L6-v2 sentence
embeddings (mean-pooled, unit length: the model's own sentence-transformers recipe). The
embeddings are made at bundle build (``embeddings/cases.npy``, ``embeddings/case_ids.json``).

Encoding 671 cases costs 15 to 20 s on 2 cores, more than the whole build budget, so the
repository ships the embeddings of the release's case texts, keyed by each text's sha256
(:data:`SHIPPED`); a build copies the vector of every text whose digest matches and encodes
only the others (a lab's own cases). The vectors are what encoding gives: a test re-encodes
a sample and compares.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, InputError, brief
from ..progress import Progress, silent
from ..query import value_at

CASE_EMBEDDINGS = "cases.npy"
CASE_IDS = "case_ids.json"
#: The release's case-text embeddings: sha256 of the text -> vector (float16).
SHIPPED = Path(__file__).with_name("case_texts.npz")
#: Tokens read per text: MiniLM was trained on 128-token inputs, and history with findings
#: rarely needs more to say what the case is.
CONTEXT = 128


def case_text(case: dict[str, Any]) -> str:
    """What a case is compared by: its history, then its findings."""
    parts = [str(value_at(case, f"Case.{name}") or "").strip() for name in ("History", "Findings")]
    return "\n".join(p for p in parts if p and p != "N/A")


def query_of_case(case: dict[str, Any]) -> str:
    """A bundle case's text as a similar-cases query; a case with none is named, since the user typed nothing wrong."""
    text = case_text(case)
    if not text:
        raise InputError(f"case {case.get('U_id')} has no history or findings to compare with")
    return text


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SentenceEncoder:
    """all-MiniLM-L6-v2 from its package, as unit sentence vectors.

    In numpy (:class:`~.bert.NumpyMiniLM`, no torch: a query answers in tens of
    milliseconds); ``backend="torch"`` runs open_clip's tower instead, which a test
    compares with it and which is faster on hundreds of texts (:func:`encoder_for`).
    """

    def __init__(self, backend: str = "numpy") -> None:
        from .checkpoint import text_weights_path

        if backend == "torch":
            from .text import package_text_tower

            self._tower: Any = package_text_tower(context_length=CONTEXT)
            self._pooled = self._torch_pooled
        else:
            from .bert import NumpyMiniLM

            weights = text_weights_path()
            self._tower = NumpyMiniLM(weights, weights.parent / "tokenizer.json", CONTEXT)
            self._pooled = self._tower.pooled

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors (N, 384)."""
        pooled = self._pooled(list(texts))
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _torch_pooled(self, texts: list[str]) -> np.ndarray:
        """A query of a few texts runs on one thread: OpenMP's second thread spins for so
        little work that on a busy 2-core host one query took 392 ms, not 30."""
        import torch

        threads = torch.get_num_threads()
        if len(texts) <= 8:
            torch.set_num_threads(1)
        try:
            return self._tower.pooled(texts).astype(np.float32)
        finally:
            torch.set_num_threads(threads)


#: Beyond this many texts, torch (two threads) encodes faster than numpy's one thread and its
#: import pays off: 671 case texts took 21.5 s in torch and 152 s in numpy on 2 shared cores.
BULK_TEXTS = 64


def encoder_for(count: int) -> SentenceEncoder:
    """The encoder for ``count`` texts: numpy for a few (no torch to import), torch for many when installed."""
    if count > BULK_TEXTS:
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
        else:
            return SentenceEncoder("torch")
    return SentenceEncoder()


def _shipped() -> dict[str, np.ndarray]:
    if not SHIPPED.is_file():
        return {}
    with np.load(SHIPPED) as data:
        return dict(zip((str(d) for d in data["sha256"]), data["vectors"], strict=True))


def embed_texts(texts: Sequence[str], progress: Progress = silent, encoder: SentenceEncoder | None = None,
                what: str = "Embedding texts") -> tuple[np.ndarray, int]:
    """Unit vectors of ``texts``: shipped ones where the digest matches, the rest encoded.

    Returns the vectors and how many had to be encoded (the model loads only then).
    """
    known = _shipped()
    vectors = np.zeros((len(texts), 384), np.float32)
    missing = []
    for i, text in enumerate(texts):
        vector = known.get(text_digest(text))
        if vector is None:
            missing.append(i)
        else:
            vectors[i] = vector
    if missing:
        encoder = encoder or encoder_for(len(missing))
        with progress(what, len(missing)) as advance:
            for start in range(0, len(missing), 64):
                chunk = missing[start:start + 64]
                vectors[chunk] = encoder.encode([texts[i] for i in chunk])
                advance(len(chunk))
    return vectors, len(missing)


def write_case_embeddings(cases: Sequence[dict[str, Any]], out_dir: Path, progress: Progress = silent,
                          encoder: SentenceEncoder | None = None) -> dict[str, Any]:
    """Embed every case's text into ``out_dir``, reusing shipped vectors; what the manifest records."""
    vectors, encoded = embed_texts([case_text(c) for c in cases], progress, encoder, "Embedding case texts")
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / CASE_EMBEDDINGS, vectors.astype(np.float16))
    (out_dir / CASE_IDS).write_text(json.dumps([c["U_id"] for c in cases]) + "\n", encoding="utf-8")
    return {"model": "all-MiniLM-L6-v2", "file": CASE_EMBEDDINGS, "count": len(cases), "encoded": encoded,
            "reused": len(cases) - encoded, "context_tokens": CONTEXT}


def ship_text_embeddings(texts: Sequence[str], path: Path = SHIPPED) -> int:
    """Encode ``texts`` and write the reuse file (run by ``tools/train/case_texts.py``)."""
    unique = sorted(set(texts))
    vectors = SentenceEncoder("torch").encode(unique) if unique else np.zeros((0, 384), np.float32)
    np.savez_compressed(path, sha256=np.array([text_digest(t) for t in unique]), vectors=vectors.astype(np.float16))
    return len(unique)


class CaseIndex:
    """A bundle's case embeddings, read once; ranking is one matrix product."""

    def __init__(self, embeddings_dir: Path) -> None:
        try:
            self.vectors = np.load(Path(embeddings_dir) / CASE_EMBEDDINGS).astype(np.float32)
            self.ids: list[str] = json.loads((Path(embeddings_dir) / CASE_IDS).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BundleError("the bundle has no case embeddings; rebuild it with this version "
                              "(medpix-tui bundle build ... --force)") from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"case embeddings unreadable in {embeddings_dir} ({brief(exc)}); "
                              "run medpix-tui bundle verify") from None
        if self.vectors.ndim != 2 or len(self.ids) != self.vectors.shape[0]:
            raise BundleError(f"case embeddings in {embeddings_dir} do not match their ids; "
                              "run medpix-tui bundle verify")
        self.row = {uid: i for i, uid in enumerate(self.ids)}

    def rank(self, query: np.ndarray, k: int, *, exclude: frozenset[str] = frozenset(),
             only: frozenset[str] | None = None) -> list[tuple[str, float]]:
        """The ``k`` cases most similar to a unit ``query``, best first (ties by id)."""
        scores = self.vectors @ np.asarray(query, np.float32)
        order = np.lexsort((np.array(self.ids), -scores))
        ranked = [(self.ids[i], float(scores[i])) for i in order
                  if self.ids[i] not in exclude and (only is None or self.ids[i] in only)]
        return ranked[:k]


def similar_cases(bundle: Any, text: str, k: int = 10, *, encoder: SentenceEncoder | None = None,
                  image_query: np.ndarray | None = None, image_weight: float = 0.5,
                  exclude: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Cases ranked by their history and findings against ``text``; an image query mixes in
    image similarity (each case scored by its most similar image) with ``image_weight``.

    A case with no history or findings is left out while the text counts: its vector is the
    empty text's, equally close to every query, so it would top any query that matches nothing.
    """
    if not text.strip():
        raise InputError("type a history or findings to compare cases with")
    if not 0 <= image_weight <= 1:
        raise InputError("--image-weight must be between 0 and 1")
    index = CaseIndex(bundle.embeddings_dir)
    query = (encoder or SentenceEncoder()).encode([text])[0]
    scores = index.vectors @ query
    if image_query is not None:
        from .similarity import load_index

        images = load_index(bundle.embeddings_dir)
        image_scores = images.vectors @ np.asarray(image_query, np.float32)
        case_of = {d["image"]: d["U_id"] for d in bundle.store.find("Image_Descriptions")}
        best: dict[str, float] = {}
        for name, score in zip(images.ids, image_scores.tolist(), strict=True):
            uid = case_of.get(name, "")
            best[uid] = max(best.get(uid, -1.0), score)
        mixed = np.array([best.get(uid, -1.0) for uid in index.ids], np.float32)
        scores = (1 - image_weight) * scores + image_weight * mixed
    text_counts = image_query is None or image_weight < 1
    order = np.lexsort((np.array(index.ids), -scores))
    store = bundle.store
    out = []
    for i in order:
        uid = index.ids[i]
        if uid in exclude:
            continue
        case = store.get_case(uid) or {}
        if text_counts and not case_text(case):
            continue
        out.append({"case": uid, "score": round(float(scores[i]), 4), "title": value_at(case, "Case.Title"),
                    "diagnosis": value_at(case, "Case.Case Diagnosis"), "split": store.split_of(uid)})
        if len(out) == k:
            break
    return out


def _bm25_cases(bundle: Any, text: str, limit: int) -> list[str]:
    """Cases ranked by SQLite FTS5 BM25 of ``text``'s words in their history and findings (the baseline)."""
    import re
    import sqlite3

    words = list(dict.fromkeys(re.findall(r"\w\w+", text.lower())))
    if not words:
        return []
    match = "{history findings} : (" + " OR ".join(f'"{w}"' for w in words) + ")"
    try:
        rows = bundle.store.search_index().conn.execute(
            "SELECT u_id FROM cases WHERE cases MATCH ? ORDER BY bm25(cases) LIMIT ?", (match, limit)).fetchall()
    except sqlite3.Error:
        return []
    return [r[0] for r in rows]


def retrieval_hits(bundle: Any, ks: Sequence[int] = (1, 5, 10),
                   encoder: SentenceEncoder | None = None) -> dict[str, Any]:
    """The authors' use of retrieval, scored: for each test case's history, is a train case with
    the same diagnosis (and, separately, the same ACR code) among the top k? Embeddings beside BM25."""
    from ..vocabulary import clean_acr

    store = bundle.store
    splits = store.splits()
    cases = {c["U_id"]: c for c in store.find("Clinical_Reports")}
    train = frozenset(u for u, s in splits.items() if s == "train" and u in cases)
    test = sorted(u for u, s in splits.items() if s == "test" and u in cases)
    keys = {
        "diagnosis": lambda c: str(value_at(c, "Case.Case Diagnosis") or "").strip().lower() or None,
        "acr_code": lambda c: clean_acr(value_at(c, "Topic.ACR Code")),
    }
    index = CaseIndex(bundle.embeddings_dir)
    histories = [str(value_at(cases[u], "Case.History") or "") for u in test]
    queries = (encoder or SentenceEncoder()).encode(histories)
    depth = max(ks)
    rankings = {
        "embedding": [[uid for uid, _ in index.rank(q, depth, only=train)] for q in queries],
        "bm25": [[uid for uid in _bm25_cases(bundle, h, 500) if uid in train][:depth] for h in histories],
    }
    out: dict[str, Any] = {"test_cases": len(test), "train_cases": len(train), "k": list(ks)}
    for key_name, key in keys.items():
        train_keys = {key(cases[u]) for u in train} - {None}
        answerable = [i for i, u in enumerate(test) if key(cases[u]) in train_keys]
        result: dict[str, Any] = {"answerable": len(answerable)}
        for method, ranked in rankings.items():
            result[method] = {f"hit@{k}": round(sum(
                any(key(cases[r]) == key(cases[test[i]]) for r in ranked[i][:k]) for i in answerable
            ) / max(len(answerable), 1), 3) for k in ks}
        out[key_name] = result
    return out
