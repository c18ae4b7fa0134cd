"""Zero-shot accuracy with the paper's prompts: overall, per class, confusion matrix.

The same report is written into the checkpoint's metadata at export and recomputed by
``medpix-tui eval``, so the figures a checkpoint claims can be checked by anyone. With the
images' case ids, each accuracy comes with a 95% interval from resampling whole cases: a
case's images share their labels and look alike, so they are not independent draws, and a
200-image split of 69 cases is far less precise than 200 images would suggest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    for t, p in zip(truth, predicted, strict=True):
        matrix[index[t], index[p]] += 1
    n = int(matrix.sum())
    per_class = {c: {"n": int(matrix[i].sum()),
                     "accuracy": round(float(matrix[i, i] / matrix[i].sum()), 4) if matrix[i].sum() else None}
                 for i, c in enumerate(classes)}
    return {"accuracy": round(float(np.trace(matrix) / n), 4) if n else None, "correct": int(np.trace(matrix)),
            "per_class": per_class, "confusion": {"classes": list(classes), "matrix": matrix.tolist()}}


def case_interval(correct: Sequence[bool], cases: Sequence[str], draws: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile interval of accuracy over ``draws`` resamples of whole cases (seeded)."""
    names, inverse = np.unique(np.asarray(cases), return_inverse=True)
    hits = np.bincount(inverse, weights=np.asarray(correct, dtype=float), minlength=len(names))
    sizes = np.bincount(inverse, minlength=len(names))
    picks = np.random.default_rng(seed).integers(0, len(names), size=(draws, len(names)))
    accuracy = hits[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    return [round(float(x), 4) for x in np.percentile(accuracy, [2.5, 97.5])]


def report(split: str, truths: list[dict[str, str]], predictions: list[dict[str, Any]],
           classes: Mapping[str, Sequence[str]], cases: Sequence[str] | None = None) -> dict[str, Any]:
    """The full report of one split: ``modality_accuracy``, ``location_accuracy`` and details.

    With ``cases`` (each image's case id), also ``modality_ci95`` and ``location_ci95``.
    """
    out: dict[str, Any] = {"split": split, "n": len(truths)}
    for task in TASKS:
        truth, predicted = [t[task] for t in truths], [p[task] for p in predictions]
        detail = task_report(truth, predicted, classes[task])
        out[f"{task}_accuracy"] = detail["accuracy"]
        if cases is not None and truths:
            out[f"{task}_ci95"] = case_interval([t == p for t, p in zip(truth, predicted, strict=True)], cases)
        out[task] = detail
    return out


def evaluate_pictures(encoder: ImageEncoder, split: str, pictures: np.ndarray, truths: list[dict[str, str]],
                      cases: Sequence[str] | None = None) -> dict[str, Any]:
    """Report for square pictures already loaded (the training pack's)."""
    return report(split, truths, encoder.head.predict(encoder.encode_arrays(pictures)), encoder.head.classes, cases)


def evaluate_files(encoder: ImageEncoder, split: str, paths: Sequence[Path], truths: list[dict[str, str]],
                   progress: Progress = silent, cases: Sequence[str] | None = None) -> dict[str, Any]:
    """Report for image files (a bundle's or the source's PNGs)."""
    return report(split, truths, encoder.head.predict(encoder.encode_files(paths, progress)), encoder.head.classes,
                  cases)
