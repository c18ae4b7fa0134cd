"""Image embeddings of a bundle and cosine ranking over them.

The embeddings are written once, at bundle build (``embeddings.npy`` float16 unit
vectors, ``ids.json`` image ids in the same order), and read on every query. A case
scores as its most similar image, so a case with many slices is not favoured.
"""

from __future__ import annotations

import json
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, InputError, brief

EMBEDDINGS_FILE = "embeddings.npy"
IDS_FILE = "ids.json"


@dataclass(frozen=True)
class EmbeddingIndex:
    """Unit image embeddings, one row per image id."""

    ids: list[str]
    vectors: np.ndarray

    def row(self, image_id: str) -> np.ndarray:
        """The embedding of a bundle image; InputError for an unknown id."""
        try:
            return self.vectors[self.ids.index(image_id)]
        except ValueError:
            raise InputError(f"no image {image_id!r} in the bundle's embeddings") from None


def save_index(out_dir: Path, ids: list[str], vectors: np.ndarray) -> None:
    """Write ``embeddings.npy`` (float16) and ``ids.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / EMBEDDINGS_FILE, vectors.astype(np.float16))
    (out_dir / IDS_FILE).write_text(json.dumps(ids) + "\n", encoding="utf-8")


def load_index(embeddings_dir: Path) -> EmbeddingIndex:
    """Read a bundle's embeddings; BundleError when they are missing or inconsistent."""
    embeddings_dir = Path(embeddings_dir)
    try:
        vectors = np.load(embeddings_dir / EMBEDDINGS_FILE).astype(np.float32)
        ids = json.loads((embeddings_dir / IDS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"the bundle has no image embeddings ({embeddings_dir}); "
                          "rebuild it with a model checkpoint") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"image embeddings unreadable in {embeddings_dir} ({brief(exc)})") from exc
    if vectors.ndim != 2 or len(ids) != vectors.shape[0]:
        raise BundleError(f"image embeddings in {embeddings_dir} do not match their ids")
    return EmbeddingIndex(ids=list(ids), vectors=vectors)


def top_images(query: np.ndarray, index: EmbeddingIndex, k: int,
               exclude: AbstractSet[str] = frozenset()) -> list[tuple[str, float]]:
    """The ``k`` images most similar to a unit ``query`` vector, best first (ties by id)."""
    scores = index.vectors @ np.asarray(query, np.float32)
    order = sorted(range(len(index.ids)), key=lambda i: (-scores[i], index.ids[i]))
    return [(index.ids[i], float(scores[i])) for i in order if index.ids[i] not in exclude][:k]


def top_cases(query: np.ndarray, index: EmbeddingIndex, case_of: dict[str, str], k: int,
              exclude: AbstractSet[str] = frozenset()) -> list[dict[str, Any]]:
    """The ``k`` cases whose best-matching image is most similar, with that image."""
    best: dict[str, tuple[float, str]] = {}
    for image_id, score in top_images(query, index, len(index.ids)):
        uid = case_of.get(image_id)
        if uid is not None and uid not in exclude and uid not in best:
            best[uid] = (score, image_id)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:k]
    return [{"case": uid, "score": round(score, 4), "image": image_id} for uid, (score, image_id) in ranked]
