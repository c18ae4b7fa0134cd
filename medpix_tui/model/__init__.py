"""The CLIP model of MedPix 2.0: zero-shot modality and location, image similarity, text search.

The entry points ``bundle build`` calls are here; torch loads only when they run, so
importing this package stays cheap. See :mod:`.checkpoint` for the folder layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..progress import Progress, silent
from .checkpoint import is_checkpoint

if TYPE_CHECKING:
    import numpy as np


def shipped_checkpoint_dir() -> Path | None:
    """The shipped checkpoint (the checkout's ``bundle/model/``, or the one installed with the
    package; :func:`medpix_tui.locations.model_dir`), else None."""
    from ..locations import model_dir

    path = model_dir().path
    return path if path is not None and is_checkpoint(path) else None


def input_size(model_dir: Path) -> int:
    """The side, in pixels, of the square pictures the checkpoint's image tower takes."""
    from .checkpoint import read_config

    return int(read_config(model_dir)["preprocess_cfg"]["size"])


def write_embeddings(model_dir: Path, images: list[tuple[str, Path]], out_dir: Path,
                     progress: Progress = silent, pictures: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Embed every ``(image id, PNG path)`` with the checkpoint in ``model_dir`` into ``out_dir``.

    Images whose file's sha256 is among the checkpoint's shipped release embeddings
    (:mod:`.release`) take that vector; only the others go through the image tower (and
    torch loads only then). ``pictures`` (id -> :func:`~.preprocess.picture_of` at
    :func:`input_size`) spares decoding the files again when the caller already has them.
    Returns what the bundle manifest records.
    """
    import numpy as np

    from ..source import sha256_file
    from .checkpoint import WEIGHTS_FILE, read_metadata
    from .release import merge_vectors, shipped_vectors
    from .similarity import EMBEDDINGS_FILE, save_index

    weights_sha256 = sha256_file(Path(model_dir) / WEIGHTS_FILE)
    known = shipped_vectors(model_dir, [path for _, path in images], weights_sha256)
    todo = [i for i, v in enumerate(known) if v is None]
    dim = next((len(v) for v in known if v is not None), 0)
    name = str(read_metadata(model_dir).get("name", ""))
    fresh = np.zeros((0, dim), np.float32)
    if todo or not dim:
        from .encoder import load_image_encoder

        encoder = load_image_encoder(model_dir)
        dim, name = encoder.dim, encoder.name
        subset = [images[i] for i in todo]
        if pictures is not None:
            fresh = encoder.encode_arrays(np.stack([pictures[n] for n, _ in subset]), progress, threads=None) \
                if subset else np.zeros((0, dim), np.float32)
        else:
            fresh = encoder.encode_files([path for _, path in subset], progress)
    save_index(out_dir, [n for n, _ in images], merge_vectors(known, fresh))
    return {"name": name, "weights_sha256": weights_sha256, "dim": dim, "count": len(images),
            "reused": len(images) - len(todo), "embedded": len(todo), "file": EMBEDDINGS_FILE, "dtype": "float16"}
