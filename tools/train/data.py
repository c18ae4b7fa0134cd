"""Read a training pack and augment its pictures on the training device.

Augmentation runs on whole batches as tensors (an affine warp and an intensity jitter),
drawn from a generator seeded per epoch, so a resumed run sees the same batches.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from .pack import FEATURES_FILE, FORMAT, PACK_FILE, PICTURES_FILE, TEXT_DIR


@dataclass
class Pack:
    """Pictures, pooled text features, labels and splits of a pack folder."""

    root: Path
    meta: dict[str, Any]
    pictures: np.ndarray
    features: np.ndarray

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.meta["items"]

    @property
    def text_dir(self) -> Path:
        return self.root / TEXT_DIR

    def indices(self, split: str) -> np.ndarray:
        """Rows of the images of one split (train, dev or test)."""
        return np.array([i for i, it in enumerate(self.items) if it["split"] == split], dtype=np.int64)

    def truths(self, rows: np.ndarray) -> list[dict[str, str]]:
        return [{"modality": self.items[i]["modality"], "location": self.items[i]["location"]} for i in rows]

    def labels(self, task: str) -> np.ndarray:
        """Class index of every image for a task, in the prompts' class order."""
        classes = self.meta["prompts"][task]["classes"]
        return np.array([classes.index(it[task]) for it in self.items], dtype=np.int64)


def read_pack(root: Path) -> Pack:
    """Load a pack folder made by :mod:`tools.train.pack`."""
    root = Path(root)
    if not (root / PACK_FILE).is_file():
        raise SystemExit(f"error: {root} is not a pack (no {PACK_FILE}); make one with python -m tools.train.pack")
    meta = json.loads((root / PACK_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise SystemExit(f"error: {root} is a pack of format {meta.get('format')}, expected {FORMAT}")
    size = meta["size"]
    pictures = np.zeros((len(meta["items"]), size, size), np.uint8)
    with zipfile.ZipFile(root / PICTURES_FILE) as zf:
        for i, item in enumerate(meta["items"]):
            pictures[i] = np.asarray(Image.open(io.BytesIO(zf.read(f"{item['image']}.png"))), dtype=np.uint8)
    return Pack(root=root, meta=meta, pictures=pictures, features=np.load(root / FEATURES_FILE))


#: The keys of an ``augment`` block: those :func:`augment` always reads, then those it may.
AUGMENT_KEYS = (("rotate_deg", "scale", "shift", "flip", "gamma", "contrast", "brightness"),
                ("zoom", "window", "erase"))


def augment(batch: torch.Tensor, gen: torch.Generator, cfg: dict[str, float]) -> torch.Tensor:
    """Random affine warp (rotation, scale, shift, flip) and intensity jitter of (B, S, S) uint8.

    Optional keys: ``zoom`` (largest zoom-in, e.g. 2.2: the tight crops of single vertebrae or
    orbits that the test split holds; default ``scale``) and ``window`` (the share of pictures
    re-windowed, see :func:`_window`). Returns (B, 1, S, S) floats in [0, 1].
    """
    b = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(b, generator=gen) * (high - low) + low).to(batch.device)

    x = batch.float().unsqueeze(1) / 255.0
    angle = uniform(-cfg["rotate_deg"], cfg["rotate_deg"]) * math.pi / 180
    scale = torch.exp(uniform(-math.log(cfg["scale"]), math.log(cfg.get("zoom", cfg["scale"]))))
    flip = torch.where(uniform(0, 1) < cfg["flip"], -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(-cfg["shift"], cfg["shift"])], 1),
                         torch.stack([sin * flip, cos, uniform(-cfg["shift"], cfg["shift"])], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(uniform(-math.log(cfg["gamma"]), math.log(cfg["gamma"])))[:, None, None, None]
    contrast = uniform(1 - cfg["contrast"], 1 + cfg["contrast"])[:, None, None, None]
    bright = uniform(-cfg["brightness"], cfg["brightness"])[:, None, None, None]
    x = (x.clamp(0, 1) ** gamma * contrast + bright).clamp(0, 1)
    if cfg.get("window", 0.0):
        x = _window(x, uniform, cfg["window"])
    if cfg.get("erase", 0.0):
        x = _erase(x, uniform, cfg["erase"])
    return x


def _window(x: torch.Tensor, uniform, probability: float) -> torch.Tensor:
    """Re-window a share of the pictures: a random grey-level window stretched to [0, 1].

    The release's CT slices come in the window their authors chose: brain (narrow, high
    contrast), soft tissue, bone (wide: flat grey tissue, white bone) or lung (low centre).
    A narrow window (width 0.35 to 1) centred anywhere in 0.15 to 0.75 mimics brain and lung
    windows; a wide one (width up to 2, grey levels compressed) mimics bone windows, so the
    modality is learnt from anatomy rather than from one window's grey levels.
    """
    b = x.shape[0]
    width = torch.exp(uniform(math.log(0.35), math.log(2.0)))[:, None, None, None]
    centre = uniform(0.15, 0.75)[:, None, None, None]
    windowed = ((x - centre) / width + 0.5).clamp(0, 1)
    windowed = torch.where(x > 0, windowed, torch.zeros_like(x))  # the black background stays black
    pick = (uniform(0, 1) < probability)[:, None, None, None]
    return torch.where(pick, windowed, x) if b else x


def _erase(x: torch.Tensor, uniform, probability: float) -> torch.Tensor:
    """Black out one random rectangle (10% to 30% of the side squared) in a share of the pictures.

    A from-scratch tower on 1,653 images learns shortcuts from single structures; hiding
    part of the anatomy makes it use the whole picture.
    """
    size = x.shape[-1]
    side = (uniform(0.1, 0.3).sqrt() * size)
    top, left = uniform(0, 1) * (size - side), uniform(0, 1) * (size - side)
    grid = torch.arange(size, device=x.device, dtype=x.dtype)
    rows = (grid[None, :] >= top[:, None]) & (grid[None, :] < (top + side)[:, None])
    cols = (grid[None, :] >= left[:, None]) & (grid[None, :] < (left + side)[:, None])
    hole = rows[:, :, None] & cols[:, None, :] & (uniform(0, 1) < probability)[:, None, None]
    return x.masked_fill(hole[:, None], 0.0)


if __name__ == "__main__":
    from . import not_a_tool

    not_a_tool("data")
