"""Zero-shot classification: an image embedding against the embeddings of the prompts.

The prompt embeddings are computed once, at export, and stored in the checkpoint, so
classifying needs no text tower: a class's probability is the softmax, over the task's
prompts, of CLIP's scaled cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import HEAD_FILE, WEIGHTS_FILE, load_arrays, read_prompts


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class ZeroShotHead:
    """Per task: its classes and their unit prompt embeddings; CLIP's logit scale.

    ``temperature`` (per task, 1 when uncalibrated) divides the logits: fitted on dev
    (:mod:`.calibration`), it makes a probability of 0.8 right about 80% of the time.
    """

    classes: dict[str, tuple[str, ...]]
    embeddings: dict[str, np.ndarray]
    logit_scale: float
    temperature: dict[str, float] = field(default_factory=dict)

    def with_temperature(self, temperature: dict[str, float]) -> ZeroShotHead:
        """The same head with calibrated temperatures."""
        return replace(self, temperature=dict(temperature))

    def logits(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Per task, uncalibrated (N, classes) logits: CLIP's scaled cosine similarities."""
        return {task: self.logit_scale * (features @ emb.T) for task, emb in self.embeddings.items()}

    def probabilities(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Per task, an (N, classes) array of (calibrated) probabilities for N unit image embeddings."""
        return {task: softmax(logits / self.temperature.get(task, 1.0))
                for task, logits in self.logits(features).items()}

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
    tensors = load_arrays(Path(model_dir) / HEAD_FILE)
    scale = load_arrays(Path(model_dir) / WEIGHTS_FILE, "logit_scale")["logit_scale"]
    return ZeroShotHead(
        classes={task: tuple(spec["classes"]) for task, spec in prompts.items()},
        embeddings={task: tensors[task].astype(np.float32) for task in prompts},
        logit_scale=min(float(np.exp(np.float32(scale).reshape(-1)[0])), 100.0),
    )
