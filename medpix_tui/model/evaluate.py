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
from typing import TYPE_CHECKING, Any

import numpy as np

from ..progress import Progress, silent
from .prompts import TASKS

if TYPE_CHECKING:  # torch's encoder or the numpy one: both have the same methods
    from .encoder import ImageEncoder
    from .zeroshot import ZeroShotHead


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
           classes: Mapping[str, Sequence[str]], cases: Sequence[str] | None = None,
           probabilities: dict[str, np.ndarray] | None = None, by_case: bool = False,
           sure: Sequence[bool] | None = None) -> dict[str, Any]:
    """The full report of one split: ``modality_accuracy``, ``location_accuracy`` and details.

    With ``cases`` (each image's case id), also ``modality_ci95`` and ``location_ci95``; with
    ``probabilities`` (per task, (N, classes), as the head gives them), ``modality_ece`` and
    ``location_ece`` (15 bins), each beside ``{task}_ece_floor``, the range a perfectly
    calibrated model would show on the same images (:func:`.calibration.ece_floor`); with both
    and ``by_case``, ``by_case``: accuracy per case (``sure``: see :func:`case_report`).
    """
    from .calibration import ece, ece_floor

    out: dict[str, Any] = {"split": split, "n": len(truths)}
    for task in TASKS:
        truth, predicted = [t[task] for t in truths], [p[task] for p in predictions]
        detail = task_report(truth, predicted, classes[task])
        out[f"{task}_accuracy"] = detail["accuracy"]
        if cases is not None and truths:
            out[f"{task}_ci95"] = case_interval([t == p for t, p in zip(truth, predicted, strict=True)], cases)
        if probabilities is not None:
            index = {c: i for i, c in enumerate(classes[task])}
            measured = ece(probabilities[task], np.array([index[t] for t in truth]))
            out[f"{task}_ece"] = round(measured, 4)
            out[f"{task}_ece_floor"] = ece_floor(probabilities[task], measured)
        out[task] = detail
    if by_case and cases is not None and probabilities is not None:
        out["by_case"] = case_report(truths, probabilities, classes, cases, sure)
    return out


def case_report(truths: Sequence[dict[str, str]], probabilities: dict[str, np.ndarray],
                classes: Mapping[str, Sequence[str]], cases: Sequence[str],
                sure: Sequence[bool] | None = None) -> dict[str, Any]:
    """Accuracy when each case's images are pooled into one answer, as ``classify --study`` does.

    A case counts once. Location is a case's label, shared by its images; a case whose
    images mix CT and MR is left out of the modality figure (a study is one modality).
    ``sure`` (per image: answered ``ok``, not ``unsure``) pools only those, as a study does;
    a case with none (a study would answer it unsure) is pooled over all its images.
    """
    from .classify import pooled_probabilities

    groups: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        groups.setdefault(case, []).append(i)
    out: dict[str, Any] = {"cases": len(groups)}
    for task in TASKS:
        hits, skipped = [], 0
        for rows in groups.values():
            labels = {truths[i][task] for i in rows}
            if len(labels) > 1:
                skipped += 1
                continue
            used = [i for i in rows if sure[i]] if sure is not None else rows
            pooled = pooled_probabilities([dict(zip(classes[task], probabilities[task][i], strict=True))
                                           for i in used or rows])
            hits.append(max(pooled, key=pooled.__getitem__) == labels.pop())
        out[f"{task}_accuracy"] = round(float(np.mean(hits)), 4) if hits else None
        out[f"{task}_cases"] = len(hits)
        out[f"{task}_mixed_cases"] = skipped
    return out


def evaluate_pictures(encoder: ImageEncoder, split: str, pictures: np.ndarray, truths: list[dict[str, str]],
                      cases: Sequence[str] | None = None) -> dict[str, Any]:
    """Report for square pictures already loaded (the training pack's)."""
    return report(split, truths, encoder.head.predict(encoder.encode_arrays(pictures)), encoder.head.classes, cases)


def evaluate_embeddings(head: ZeroShotHead, split: str, embeddings: np.ndarray, truths: list[dict[str, str]],
                        cases: Sequence[str] | None = None, by_case: bool = False,
                        sure: Sequence[bool] | None = None) -> dict[str, Any]:
    """Report for unit image embeddings (a file's, or the release vector shipped for it), with ECE."""
    return report(split, truths, head.predict(embeddings), head.classes, cases, head.probabilities(embeddings),
                  by_case, sure)


def evaluate_files(encoder: ImageEncoder, split: str, paths: Sequence[Path], truths: list[dict[str, str]],
                   progress: Progress = silent, cases: Sequence[str] | None = None,
                   by_case: bool = False) -> dict[str, Any]:
    """Report for image files (a bundle's or the source's PNGs), with ECE and, if asked, per case."""
    return evaluate_embeddings(encoder.head, split, encoder.encode_files(paths, progress), truths, cases, by_case)
