"""Calibrated confidence and "not a CT or MR slice": data products fitted per checkpoint, read here.

Both are fitted from a checkpoint and the release by ``python -m tools.train.calibrate``
(the fitting, and the choice of method, live there; the library only reads and applies)
and stored beside the weights, bound to their sha256, so a new checkpoint is refitted in
one command and a stale file is never applied:

    calibration.json      temperature per task, the OOD score, its threshold, the figures
    ood_reference.npy     the training images' unit stage features (float16), the score's reference
    ood_release.json      every release image's OOD score keyed by its file's sha256, so
                          ``bundle build`` reuses them with the shipped release embeddings
                          (which carry no stage features); bound to the weights and reference

* **Temperature** (per task, chosen and fitted on dev; ``calibration.json``'s ``method``
  records how, with the cross-validated figures of the methods compared): CLIP's logits
  divided by it give probabilities that are right about as often as they claim. A
  temperature never changes the answer (the argmax). The expected calibration error
  (:func:`ece`, 15 equal-width bins) measures it.
* **Out of distribution**: the mean cosine between an image's stage features (each stage
  of the tower averaged over the picture) and its :data:`OOD_K` nearest training images.
  Chosen on data: on pydicom's non-CT/MR test files and scikit-image's sample pictures it
  rejected 81% where the final embedding's nearest neighbours rejected 44%, the Mahalanobis
  distance of the embedding 51%, and the softmax or energy scores 0 to 4%, each at the
  threshold that keeps 99.5% of dev. The threshold is that dev quantile (:data:`OOD_DEV_KEEP`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError, brief
from .checkpoint import WEIGHTS_FILE

CALIBRATION_FILE = "calibration.json"
OOD_REFERENCE_FILE = "ood_reference.npy"
RELEASE_SCORES_FILE = "ood_release.json"
FORMAT = 1
ECE_BINS = 15
OOD_K = 5
#: The share of dev images the OOD threshold keeps.
OOD_DEV_KEEP = 0.995
#: How a checkpoint gets its calibration: on the folder a bundle was built from, not the bundle's copy.
RECALIBRATE = "python -m tools.train.calibrate --model CHECKPOINT, on the folder the bundle was built from"


def encode_with_features(encoder: Any, pictures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings and the OOD score's unit features; an encoder without stage features
    (a torch-only tower) gives its embeddings for both."""
    if hasattr(encoder, "encode_with_features"):
        return encoder.encode_with_features(pictures)
    embeddings = encoder.encode_arrays(pictures)
    return embeddings, embeddings


def _bin_of(confidence: np.ndarray, bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)


def ece(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: |accuracy - confidence| per confidence bin, weighted by its size."""
    if len(truth) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    which = _bin_of(confidence, bins)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def ece_floor(probabilities: np.ndarray, observed: float | None = None, draws: int = 2000, seed: int = 0,
              bins: int = ECE_BINS) -> dict[str, float]:
    """The ECE a perfectly calibrated model would show on these rows: its answers right as often as it says.

    A 15-bin ECE on 200 images is far from zero even when every probability is right, because
    each bin holds a dozen images. Each draw marks every answer right with its own confidence;
    the 5th, 50th and 95th percentiles over ``draws`` say how far from zero, and with
    ``observed`` (the measured ECE) the share of draws at or above it says whether that
    figure is evidence of miscalibration at all (a p-value).
    """
    n = len(probabilities)
    if n == 0:
        return {"p05": 0.0, "median": 0.0, "p95": 0.0, **({"p_value": 1.0} if observed is not None else {})}
    confidence = probabilities.max(axis=1)
    onehot = np.eye(bins)[_bin_of(confidence, bins)]
    right = np.random.default_rng(seed).random((draws, n)) < confidence
    values = np.abs(right @ onehot - confidence @ onehot).sum(axis=1) / n
    p05, median, p95 = np.quantile(values, [0.05, 0.5, 0.95])
    out = {"p05": round(float(p05), 4), "median": round(float(median), 4), "p95": round(float(p95), 4)}
    if observed is not None:
        out["p_value"] = round(float(np.mean(values >= observed - 1e-9)), 4)
    return out


def ood_scores(features: np.ndarray, reference: np.ndarray, k: int = OOD_K) -> np.ndarray:
    """Mean cosine of each unit feature row to its ``k`` nearest reference rows (higher: more familiar)."""
    if len(features) == 0:
        return np.zeros(0, np.float32)
    sims = features.astype(np.float32) @ reference.astype(np.float32).T
    k = min(k, sims.shape[1])
    return np.sort(np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:], axis=1).mean(axis=1)


@dataclass(frozen=True)
class Calibration:
    """A checkpoint's fitted temperatures and OOD test."""

    temperature: dict[str, float]
    threshold: float
    k: int
    reference: np.ndarray
    info: dict[str, Any]

    def scores(self, features: np.ndarray) -> np.ndarray:
        return ood_scores(features, self.reference, self.k)


def weights_digest(model_dir: Path) -> str:
    """sha256 of the checkpoint's weights, which a calibration is bound to."""
    from ..source import sha256_file

    return sha256_file(Path(model_dir) / WEIGHTS_FILE)


def calibration_status(model_dir: Path) -> str | None:
    """None when the checkpoint has a current calibration, else why not (one line)."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return f"the model has no calibration (run: {RECALIBRATE})"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{path} is unreadable"
    if not isinstance(content, dict) or content.get("weights_sha256") != weights_digest(model_dir):
        return f"the calibration was fitted for other weights (rerun: {RECALIBRATE})"
    return None


def load_calibration(model_dir: Path) -> Calibration | None:
    """The checkpoint's calibration; None when it has none or it belongs to other weights."""
    model_dir = Path(model_dir)
    if calibration_status(model_dir) is not None:
        return None
    content = json.loads((model_dir / CALIBRATION_FILE).read_text(encoding="utf-8"))
    try:
        reference = np.load(model_dir / OOD_REFERENCE_FILE, allow_pickle=False).astype(np.float32)
        temperature = {str(k): float(v) for k, v in content["temperature"].items()}
        threshold, k = float(content["ood"]["threshold"]), int(content["ood"]["k"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"model calibration in {model_dir} is damaged ({brief(exc)})") from None
    if reference.ndim != 2 or not all(t > 0 for t in temperature.values()):
        raise BundleError(f"model calibration in {model_dir} is damaged")
    return Calibration(temperature=temperature, threshold=threshold, k=k, reference=reference, info=content)


def reference_digest(model_dir: Path) -> str:
    """sha256 of the OOD reference, which the release scores are bound to."""
    from ..source import sha256_file

    return sha256_file(Path(model_dir) / OOD_REFERENCE_FILE)


def read_release_scores(model_dir: Path, calibration: Calibration | None) -> dict[str, float]:
    """sha256 -> OOD score of the release images; {} when absent or fitted for other weights or reference."""
    path = Path(model_dir) / RELEASE_SCORES_FILE
    if calibration is None or not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        scores = {str(k): float(v) for k, v in content["scores"].items()}
        current = (content["weights_sha256"] == weights_digest(model_dir)
                   and content["reference_sha256"] == reference_digest(model_dir) and content["k"] == calibration.k)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"model release scores in {model_dir} are damaged ({brief(exc)})") from None
    return scores if current else {}
