"""Image embeddings on CPU: the checkpoint's image tower behind :func:`load_square`.

This is the one fast path into the model, used by ``classify``, ``eval``, ``similar``
and the bundle's embeddings; it imports neither open_clip nor transformers.

The forward pass runs on one thread while the next batch's PNGs decode on the other
cores: the tower is small (0.2 GFLOP an image), and on a busy 2-core machine torch's
thread pool waiting on a descheduled thread made ``classify`` 5x slower (36 ms against
175 ms median) and the bundle's 2050 embeddings 2.3x slower (43 s against 100 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..progress import Progress, silent
from .checkpoint import WEIGHTS_FILE, load_tensors, read_config, read_metadata
from .preprocess import encode_files_prefetched
from .tower import build_tower, fold_batch_norms
from .zeroshot import ZeroShotHead, load_head

BATCH = 64
FORWARD_THREADS = 1


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch threads (None: as set), then restore the caller's setting."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ImageEncoder:
    """A checkpoint's image tower, its input normalisation and its zero-shot head."""

    tower: torch.nn.Module
    size: int
    mean: float
    std: float
    head: ZeroShotHead
    name: str

    @property
    def dim(self) -> int:
        return int(cast(int, self.tower.output_dim))

    def encode_arrays(self, pictures: np.ndarray, progress: Progress = silent,
                      threads: int | None = FORWARD_THREADS) -> np.ndarray:
        """Unit embeddings (N, dim) of N square 8-bit pictures from :func:`load_square`.

        ``threads`` for the forward pass: one while other threads decode the next batch
        (:meth:`encode_files`); None (torch's default: every core) when the pictures are all
        decoded already and nothing else runs beside it.
        """
        out = []
        with (progress("Embedding images", len(pictures)) as advance, torch.inference_mode(),
              _torch_threads(threads)):
            for start in range(0, len(pictures), BATCH):
                x = torch.from_numpy(np.ascontiguousarray(pictures[start:start + BATCH])).float()
                x = ((x / 255.0 - self.mean) / self.std).unsqueeze(1).expand(-1, 3, -1, -1)
                x = x.contiguous(memory_format=torch.channels_last)
                out.append(torch.nn.functional.normalize(self.tower(x), dim=-1))
                advance(len(x))
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return torch.cat(out).numpy()

    def encode_files(self, paths: Sequence[Path], progress: Progress = silent) -> np.ndarray:
        """Unit embeddings of image files (PNG, JPEG, DICOM); batch i+1 decodes while i runs."""
        if not paths:
            return np.zeros((0, self.dim), np.float32)
        return encode_files_prefetched(paths, self.size, BATCH, self.encode_arrays, progress)

    def classify_files(self, paths: Sequence[Path]) -> list[dict[str, Any]]:
        """Modality and location of each file, with probabilities."""
        return self.head.predict(self.encode_files(paths))


def load_image_encoder(model_dir: Path) -> ImageEncoder:
    """Build the image tower of a checkpoint folder and load its weights."""
    config = read_config(model_dir)
    tower = build_tower(config["model_cfg"])
    state = {k.removeprefix("visual."): v for k, v in load_tensors(Path(model_dir) / WEIGHTS_FILE, "visual.").items()}
    tower.load_state_dict(state, strict=True)
    fold_batch_norms(tower.eval()).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # oneDNN: 1.3-1.6x faster on CPU
    pre = config["preprocess_cfg"]
    return ImageEncoder(tower=tower, size=int(pre["size"]), mean=float(pre["mean"][0]), std=float(pre["std"][0]),
                        head=load_head(model_dir), name=str(read_metadata(model_dir).get("name", "")))
