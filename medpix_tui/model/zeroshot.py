"""Zero-shot classification: an image embedding against the embeddings of the prompts.

The prompt embeddings are computed once, at export, and stored in the checkpoint, so
classifying needs no text tower: a class's probability is the softmax, over the task's
prompts, of CLIP's scaled cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import HEAD_FILE, WEIGHTS_FILE, load_tensors, read_prompts


@dataclass(frozen=True)
class ZeroShotHead:
    """Per task: its classes and their unit prompt embeddings; CLIP's logit scale."""

    classes: dict[str, tuple[str, ...]]
    embeddings: dict[str, np.ndarray]
    logit_scale: float

    def probabilities(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Per task, an (N, classes) array of probabilities for N unit image embeddings."""
        out = {}
        for task, emb in self.embeddings.items():
            logits = self.logit_scale * (features @ emb.T)
            logits -= logits.max(axis=1, keepdims=True)
            exp = np.exp(logits)
            out[task] = exp / exp.sum(axis=1, keepdims=True)
        return out

    def predict(self, features: np.ndarray) -> list[dict[str, Any]]:
        """For each image: the most probable class of every task and all probabilities."""
        probs = self.probabilities(features)
        results = []
        for i in range(features.shape[0]):
            row: dict[str, Any] = {}
            for task, p in probs.items():
                row[task] = self.classes[task][int(p[i].argmax())]
            row["probabilities"] = {task: {c: round(float(v), 4) for c, v in zip(self.classes[task], p[i], strict=True)}
                                    for task, p in probs.items()}
            results.append(row)
        return results


def load_head(model_dir: Path) -> ZeroShotHead:
    """The zero-shot head stored in a checkpoint folder."""
    prompts = read_prompts(model_dir)
    tensors = load_tensors(Path(model_dir) / HEAD_FILE)
    scale = load_tensors(Path(model_dir) / WEIGHTS_FILE, "logit_scale")["logit_scale"]
    return ZeroShotHead(
        classes={task: tuple(spec["classes"]) for task, spec in prompts.items()},
        embeddings={task: tensors[task].float().numpy() for task in prompts},
        logit_scale=float(scale.float().exp().clamp(max=100.0)),
    )
