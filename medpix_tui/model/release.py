"""The release images' embeddings, shipped in the checkpoint and keyed by each file's sha256.

A pretrained tower costs more per image than the bundle build can spend on 2,050 images
on a user's 2 CPU cores (Lite0: about 35 ms an image on one core, 70 s in all, against a
30 s budget for the whole build). The export embeds the release images once, with the
library's own path, and stores the vectors under the sha256 of the file the bundle copies;
``bundle build`` takes a vector from here when an image's digest matches and embeds only
the others. A changed or added picture has another digest, so it is embedded afresh; the
file also records the sha256 of the weights it came from, and is ignored for any others.

Read with safetensors' numpy loader: a build that reuses every vector never imports torch.
``medpix-tui eval`` reuses them the same way (:func:`shipped_vectors`): the vectors are
float32, what the numpy tower gives for the same files, so the figures are the same as
when every picture is embedded again (``eval --from-pixels``; a test compares the two).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, brief

RELEASE_FILE = "release_embeddings.safetensors"


def write_release(model_dir: Path, images: list[str], digests: list[str], vectors: np.ndarray,
                  weights_sha256: str) -> None:
    """Store unit ``vectors`` (N, dim) of the release images under their files' sha256 (float32:
    float16 moved a 15-bin ECE by 0.002, a confidence crossing a bin's edge)."""
    from safetensors.numpy import save

    from ..atomic import write_atomic

    if not (len(images) == len(digests) == len(vectors)):
        raise ValueError("images, digests and vectors differ in length")
    write_atomic(Path(model_dir) / RELEASE_FILE,
                 save({"embeddings": np.ascontiguousarray(vectors, dtype=np.float32)},
                      metadata={"sha256": json.dumps(digests), "images": json.dumps(images),
                                "weights_sha256": weights_sha256}))


def read_release(model_dir: Path, weights_sha256: str) -> dict[str, np.ndarray]:
    """sha256 -> float32 unit vector, or {} when the checkpoint ships none or they belong to other weights."""
    from safetensors import SafetensorError, safe_open

    path = Path(model_dir) / RELEASE_FILE
    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="np") as f:
            meta: dict[str, Any] = f.metadata() or {}
            vectors = f.get_tensor("embeddings").astype(np.float32)
        digests = json.loads(meta.get("sha256", "[]"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"model checkpoint unreadable: {path} ({brief(exc)})") from exc
    if meta.get("weights_sha256") != weights_sha256 or len(digests) != len(vectors):
        return {}
    return dict(zip(digests, vectors, strict=True))


def shipped_vectors(model_dir: Path, paths: Sequence[Path],
                    weights_sha256: str | None = None) -> list[np.ndarray | None]:
    """Each file's shipped release vector, matched by the file's sha256; None where there is none.

    ``weights_sha256`` spares hashing the weights again when the caller already has it.
    """
    from ..source import sha256_file
    from .checkpoint import WEIGHTS_FILE

    if weights_sha256 is None:
        weights_sha256 = sha256_file(Path(model_dir) / WEIGHTS_FILE)
    shipped = read_release(model_dir, weights_sha256)
    if not shipped:
        return [None] * len(paths)
    return [shipped.get(sha256_file(Path(p))) for p in paths]


def merge_vectors(known: Sequence[np.ndarray | None], fresh: np.ndarray | None) -> np.ndarray:
    """(N, dim) float32: the shipped vector where :func:`shipped_vectors` found one, else ``fresh``'s next row."""
    dim = next((len(v) for v in known if v is not None), fresh.shape[1] if fresh is not None else 0)
    out = np.zeros((len(known), dim), np.float32)
    rows = iter(fresh if fresh is not None else ())
    for i, vector in enumerate(known):
        out[i] = vector if vector is not None else next(rows)
    return out
