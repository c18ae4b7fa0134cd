"""Two CLIP towers side by side as one: the zero-shot logits are the weighted mean of theirs.

Each member keeps its own input normalisation, image tower, text projection and logit
scale. With member ``i``'s unit embeddings ``e_i`` (image) and ``t_i`` (text), logit scale
``s_i`` and share ``w_i`` of the vote, the ensemble's embeddings are the concatenations
``[a_1 e_1, a_2 e_2]`` and ``[a_1 t_1, a_2 t_2]`` with ``a_i = sqrt(w_i s_i / S)`` and
logit scale ``S = sum(w_i s_i)``. Both are unit vectors, and ``S`` times their dot product
is exactly ``sum(w_i s_i cos(e_i, t_i))``: zero-shot classification, similar images and text
search all stay plain CLIP cosines over one embedding, so nothing downstream changes.

Config (``vision_cfg``)::

    {"architecture": "ensemble", "image_size": 128,
     "members": [{"model_cfg": {...}, "mean": 0.2, "std": 0.25, "scale": a_1}, ...]}

with ``preprocess_cfg`` mean 0 and std 1, so the tower receives pictures in [0, 1].
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

ARCHITECTURE = "ensemble"


class EnsembleTower(nn.Module):
    """Member image towers, each fed its own normalisation; their unit embeddings, scaled, concatenated."""

    def __init__(self, members: list[nn.Module], norms: list[tuple[float, float]], scales: list[float],
                 image_size: int) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.norms = norms
        self.scales = scales
        self.image_size = image_size
        self.output_dim = sum(int(cast(int, m.output_dim)) for m in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([scale * F.normalize(member((x - mean) / std), dim=-1)
                          for member, (mean, std), scale in zip(self.members, self.norms, self.scales, strict=True)],
                         dim=-1)

    def fold_batch_norms(self) -> EnsembleTower:
        from .tower import fold_batch_norms

        for member in self.members:
            fold_batch_norms(member)
        return self


class EnsembleProjection(nn.Module):
    """The members' text projections (open_clip's MLP over the pooled MiniLM), unit-normalised, scaled, concatenated."""

    def __init__(self, dims: list[int], scales: list[float], width: int = 384) -> None:
        super().__init__()
        self.members = nn.ModuleList(
            nn.Sequential(nn.Linear(width, (width + d) // 2, bias=False), nn.GELU(),
                          nn.Linear((width + d) // 2, d, bias=False)) for d in dims)
        self.scales = scales

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([s * F.normalize(m(x), dim=-1) for m, s in zip(self.members, self.scales, strict=True)],
                         dim=-1)


def _members(model_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return list(model_cfg["vision_cfg"]["members"])


def build_ensemble(model_cfg: dict[str, Any]) -> EnsembleTower:
    """The ensemble image tower a ``vision_cfg.architecture`` = ``ensemble`` config describes."""
    from .tower import build_tower

    members = _members(model_cfg)
    return EnsembleTower([build_tower(m["model_cfg"]) for m in members],
                         [(float(m["mean"]), float(m["std"])) for m in members],
                         [float(m["scale"]) for m in members], int(model_cfg["vision_cfg"]["image_size"]))


def build_projection(model_cfg: dict[str, Any]) -> EnsembleProjection:
    """The text side of the same ensemble (its tensors: ``text.proj.members.I.*``)."""
    members = _members(model_cfg)
    return EnsembleProjection([int(m["model_cfg"]["embed_dim"]) for m in members], [float(m["scale"]) for m in members])


def is_ensemble(model_cfg: dict[str, Any]) -> bool:
    return model_cfg.get("vision_cfg", {}).get("architecture") == ARCHITECTURE
