"""The image encoder a command uses: numpy when the tower has a numpy forward, else torch.

``classify`` and ``similar`` embed a handful of images; importing torch would cost them
more than the whole answer (see :mod:`.numpy_tower`). Both encoders give the same unit
embeddings (a test checks it) and share the zero-shot head and its calibration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ..progress import Progress, silent
from .checkpoint import read_config, read_metadata
from .preprocess import encode_files_prefetched, load_many
from .zeroshot import ZeroShotHead, load_head

BATCH = 16


class Encoder(Protocol):
    """What :class:`.encoder.ImageEncoder` and :class:`NumpyImageEncoder` both offer."""

    size: int
    head: ZeroShotHead
    name: str

    @property
    def dim(self) -> int: ...

    def encode_arrays(self, pictures: np.ndarray, progress: Progress = silent) -> np.ndarray: ...

    def encode_files(self, paths: Sequence[Path], progress: Progress = silent) -> np.ndarray: ...


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


@dataclass
class NumpyImageEncoder:
    """A checkpoint's image tower in numpy, its input normalisation and its zero-shot head."""

    tower: Callable[[np.ndarray], np.ndarray]
    size: int
    mean: float
    std: float
    head: ZeroShotHead
    name: str
    dim: int

    def encode_arrays(self, pictures: np.ndarray, progress: Progress = silent) -> np.ndarray:
        """Unit embeddings (N, dim) of N square 8-bit pictures from :func:`~.preprocess.load_square`."""
        return self.encode_with_features(pictures, progress)[0]

    def encode_with_features(self, pictures: np.ndarray, progress: Progress = silent) -> tuple[np.ndarray, np.ndarray]:
        """Unit embeddings and unit stage features (the OOD score's input) of N square pictures."""
        embeddings, features = [], []
        with progress("Embedding images", len(pictures)) as advance:
            for start in range(0, len(pictures), BATCH):
                x = (pictures[start:start + BATCH].astype(np.float32) / 255.0 - self.mean) / self.std
                if hasattr(self.tower, "embed_with_features"):
                    v, f = self.tower.embed_with_features(x)
                else:
                    v = self.tower(x)
                    f = v
                embeddings.append(_unit(v))
                features.append(_unit(f))
                advance(len(x))
        if not embeddings:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, 0), np.float32)
        return np.concatenate(embeddings).astype(np.float32), np.concatenate(features).astype(np.float32)

    def encode_files(self, paths: Sequence[Path], progress: Progress = silent) -> np.ndarray:
        """Unit embeddings of image files (PNG, JPEG, DICOM); batch i+1 decodes while i runs."""
        if len(paths) <= 4 * BATCH:
            return self.encode_arrays(load_many(paths, self.size), progress)
        return encode_files_prefetched(paths, self.size, 4 * BATCH, self.encode_arrays, progress)

    def classify_files(self, paths: Sequence[Path]) -> list[dict[str, Any]]:
        """Modality and location of each file, with probabilities."""
        return self.head.predict(self.encode_files(paths))


def load_numpy_encoder(model_dir: Path) -> NumpyImageEncoder:
    """The numpy encoder of a checkpoint; ValueError when its tower has no numpy forward."""
    from .numpy_tower import load_numpy_tower, supports

    config = read_config(model_dir)
    if not supports(config["model_cfg"]):
        raise ValueError("this checkpoint's image tower has no numpy forward")
    # numpy's BLAS threads spin on a busy 2-core machine: one thread answered in 15-34 ms
    # where two took 140-540 ms. Effective only before numpy loads (the CLI sets it early).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    tower = load_numpy_tower(model_dir, config["model_cfg"])
    pre = config["preprocess_cfg"]
    return NumpyImageEncoder(tower=tower, size=int(pre["size"]), mean=float(pre["mean"][0]),
                             std=float(pre["std"][0]), head=load_head(model_dir),
                             name=str(read_metadata(model_dir).get("name", "")),
                             dim=int(getattr(tower, "output_dim", 0)))


def load_encoder(model_dir: Path, calibrated: bool = True) -> Any:
    """The fastest encoder for a checkpoint (numpy, else torch), its head calibrated when
    the checkpoint has a current calibration (:mod:`.calibration`)."""
    from .numpy_tower import supports

    if supports(read_config(model_dir)["model_cfg"]):
        encoder: Any = load_numpy_encoder(model_dir)
    else:
        from .encoder import load_image_encoder

        encoder = load_image_encoder(model_dir)
    if calibrated:
        from .calibration import load_calibration

        calibration = load_calibration(model_dir)
        if calibration is not None:
            encoder = replace(encoder, head=encoder.head.with_temperature(calibration.temperature))
    return encoder
