"""Zero-shot accuracy with the paper's prompts: overall, per class, confusion matrix.

The same report is written into the checkpoint's metadata at export and recomputed by
``medpix-tui eval``, so the figures a checkpoint claims can be checked by anyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import Progress, silent
from .encoder import ImageEncoder
from .prompts import TASKS


def task_report(truth: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class recall (with counts) and the confusion matrix (rows: truth)."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(truth, predicted):
        matrix[index[t], index[p]] += 1
    n = int(matrix.sum())
    per_class = {c: {"n": int(matrix[i].sum()),
                     "accuracy": round(float(matrix[i, i] / matrix[i].sum()), 4) if matrix[i].sum() else None}
                 for i, c in enumerate(classes)}
    return {"accuracy": round(float(np.trace(matrix) / n), 4) if n else None, "correct": int(np.trace(matrix)),
            "per_class": per_class, "confusion": {"classes": list(classes), "matrix": matrix.tolist()}}


def report(split: str, truths: list[dict[str, str]], predictions: list[dict[str, Any]],
           classes: dict[str, Sequence[str]]) -> dict[str, Any]:
    """The full report of one split: ``modality_accuracy``, ``location_accuracy`` and details."""
    out: dict[str, Any] = {"split": split, "n": len(truths)}
    for task in TASKS:
        detail = task_report([t[task] for t in truths], [p[task] for p in predictions], classes[task])
        out[f"{task}_accuracy"] = detail["accuracy"]
        out[task] = detail
    return out


def evaluate_pictures(encoder: ImageEncoder, split: str, pictures: np.ndarray, truths: list[dict[str, str]]) -> dict[str, Any]:
    """Report for square pictures already loaded (the training pack's)."""
    return report(split, truths, encoder.head.predict(encoder.encode_arrays(pictures)), encoder.head.classes)


def evaluate_files(encoder: ImageEncoder, split: str, paths: Sequence[Path], truths: list[dict[str, str]],
                   progress: Progress = silent) -> dict[str, Any]:
    """Report for image files (a bundle's or the source's PNGs)."""
    return report(split, truths, encoder.head.predict(encoder.encode_files(paths, progress)), encoder.head.classes)
