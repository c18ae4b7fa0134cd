"""The CLIP model of MedPix 2.0: zero-shot modality and location, image similarity, text search.

The entry points ``bundle build`` calls are here; torch loads only when they run, so
importing this package stays cheap. See :mod:`.checkpoint` for the folder layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..progress import Progress, silent
from .checkpoint import is_checkpoint


def shipped_checkpoint_dir() -> Path | None:
    """The repository's ``bundle/model/`` when it holds a checkpoint, else None."""
    path = Path(__file__).resolve().parents[2] / "bundle" / "model"
    return path if is_checkpoint(path) else None


def write_embeddings(model_dir: Path, images: list[tuple[str, Path]], out_dir: Path,
                     progress: Progress = silent) -> dict[str, Any]:
    """Embed every ``(image id, PNG path)`` with the checkpoint in ``model_dir`` into ``out_dir``.

    Returns what the bundle manifest records about them.
    """
    from ..source import sha256_file
    from .checkpoint import WEIGHTS_FILE
    from .encoder import load_image_encoder
    from .similarity import EMBEDDINGS_FILE, save_index

    encoder = load_image_encoder(model_dir)
    vectors = encoder.encode_files([path for _, path in images], progress)
    save_index(out_dir, [name for name, _ in images], vectors)
    return {"name": encoder.name, "weights_sha256": sha256_file(Path(model_dir) / WEIGHTS_FILE),
            "dim": encoder.dim, "count": len(images), "file": EMBEDDINGS_FILE, "dtype": "float16"}
