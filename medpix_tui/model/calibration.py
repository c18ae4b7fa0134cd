"""Calibrated confidence and "not a CT or MR slice": data products fitted per checkpoint.

Both are fitted from a checkpoint and the release by :func:`fit_calibration` (the command
is ``python -m tools.train.calibrate``) and stored beside the weights, bound to their
sha256, so a new checkpoint is refitted in one command and a stale file is never applied:

    calibration.json      temperature per task, the OOD score, its threshold, the figures
    ood_reference.npy     the training images' unit stage features (float16), the score's reference
    ood_release.json      every release image's OOD score keyed by its file's sha256, so
                          ``bundle build`` reuses them with the shipped release embeddings
                          (which carry no stage features); bound to the weights and reference

* **Temperature** (per task, fitted on dev by minimising the negative log-likelihood):
  CLIP's logits divided by it give probabilities that are right as often as they claim.
  The expected calibration error (:func:`ece`, 15 equal-width bins) measures it.
* **Out of distribution**: the mean cosine between an image's stage features (each stage
  of the tower averaged over the picture) and its :data:`OOD_K` nearest training images.
  Chosen on data: on pydicom's non-CT/MR test files and scikit-image's sample pictures it
  rejected 81% where the final embedding's nearest neighbours rejected 44%, the Mahalanobis
  distance of the embedding 51%, and the softmax or energy scores 0 to 4%, each at the
  threshold that keeps 99.5% of dev. The threshold is that dev quantile (:data:`OOD_DEV_KEEP`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BundleError
from ..source import SPLITS
from .checkpoint import WEIGHTS_FILE
from .zeroshot import ZeroShotHead, softmax

CALIBRATION_FILE = "calibration.json"
OOD_REFERENCE_FILE = "ood_reference.npy"
RELEASE_SCORES_FILE = "ood_release.json"
FORMAT = 1
ECE_BINS = 15
OOD_K = 5
#: The share of dev images the OOD threshold keeps.
OOD_DEV_KEEP = 0.995


def encode_with_features(encoder: Any, pictures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings and the OOD score's unit features; an encoder without stage features
    (a torch-only tower) gives its embeddings for both."""
    if hasattr(encoder, "encode_with_features"):
        return encoder.encode_with_features(pictures)
    embeddings = encoder.encode_arrays(pictures)
    return embeddings, embeddings


def ece(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: |accuracy - confidence| per confidence bin, weighted by its size."""
    if len(truth) == 0:
        return 0.0
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def nll(logits: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true classes at a temperature."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(truth)), truth].mean())


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature minimising the NLL (golden-section search over log T in [1/20, 20])."""
    lo, hi = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, truth, float(np.exp(a))), nll(logits, truth, float(np.exp(b)))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, truth, float(np.exp(a)))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, truth, float(np.exp(b)))
    return round(float(np.exp((lo + hi) / 2)), 4)


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


def _labels(truths: Sequence[dict[str, str]], head: ZeroShotHead, task: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(head.classes[task])}
    return np.array([index[t[task]] for t in truths], dtype=int)


def fit_calibration(head: ZeroShotHead, splits: dict[str, tuple[np.ndarray, np.ndarray, list[dict[str, str]]]],
                    feature_kind: str) -> tuple[dict[str, Any], np.ndarray]:
    """Fit on ``splits`` (``train``, ``dev``, optionally ``test``: embeddings, OOD features, truths).

    Temperatures and the threshold come from dev, the reference from train; test is only
    reported. Returns ``calibration.json``'s content (without the weights digest) and the reference.
    """
    dev_emb, dev_feat, dev_truth = splits["dev"]
    reference = splits["train"][1]
    logits = head.logits(dev_emb)
    temperature = {task: fit_temperature(logits[task], _labels(dev_truth, head, task)) for task in head.classes}
    dev_scores = ood_scores(dev_feat, reference)
    threshold = float(np.quantile(dev_scores, 1 - OOD_DEV_KEEP))
    figures: dict[str, Any] = {}
    for split in ("dev", "test"):
        if split not in splits:
            continue
        emb, feat, truth = splits[split]
        split_logits = head.logits(emb)
        row: dict[str, Any] = {"n": len(truth),
                               "ood_accepted": round(float((ood_scores(feat, reference) >= threshold).mean()), 4)}
        for task in head.classes:
            labels = _labels(truth, head, task)
            row[f"{task}_ece_uncalibrated"] = round(ece(softmax(split_logits[task]), labels), 4)
            row[f"{task}_ece"] = round(ece(softmax(split_logits[task] / temperature[task]), labels), 4)
        figures[split] = row
    content = {"format": FORMAT, "temperature": temperature,
               "ood": {"score": f"mean cosine to the {OOD_K} nearest training images' {feature_kind}",
                       "features": feature_kind, "k": OOD_K, "threshold": round(threshold, 5),
                       "dev_keep": OOD_DEV_KEEP, "reference": OOD_REFERENCE_FILE, "train_images": len(reference)},
               "figures": figures}
    return content, reference


def _weights_digest(model_dir: Path) -> str:
    from ..source import sha256_file

    return sha256_file(Path(model_dir) / WEIGHTS_FILE)


def write_calibration(model_dir: Path, content: dict[str, Any], reference: np.ndarray) -> Path:
    """Store the calibration beside the checkpoint's weights, bound to their digest."""
    from ..atomic import umask_mode

    model_dir = Path(model_dir)
    np.save(model_dir / OOD_REFERENCE_FILE, reference.astype(np.float16))
    (model_dir / OOD_REFERENCE_FILE).chmod(umask_mode(0o666))
    content = {**content, "weights_sha256": _weights_digest(model_dir)}
    path = model_dir / CALIBRATION_FILE
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    return path


def calibration_status(model_dir: Path) -> str | None:
    """None when the checkpoint has a current calibration, else why not (one line)."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.is_file():
        return "the model has no calibration (run: python -m tools.train.calibrate)"
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"{path} is unreadable"
    if not isinstance(content, dict) or content.get("weights_sha256") != _weights_digest(model_dir):
        return "the calibration was fitted for other weights (rerun: python -m tools.train.calibrate)"
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
        raise BundleError(f"model calibration in {model_dir} is damaged ({str(exc)[:80]})") from None
    if reference.ndim != 2 or not all(t > 0 for t in temperature.values()):
        raise BundleError(f"model calibration in {model_dir} is damaged")
    return Calibration(temperature=temperature, threshold=threshold, k=k, reference=reference, info=content)


def _reference_digest(model_dir: Path) -> str:
    from ..source import sha256_file

    return sha256_file(Path(model_dir) / OOD_REFERENCE_FILE)


def write_release_scores(model_dir: Path, digests: Sequence[str], scores: np.ndarray) -> Path:
    """Store the release images' OOD scores under their files' sha256, bound to the weights and reference."""
    from ..atomic import umask_mode

    model_dir = Path(model_dir)
    calibration = load_calibration(model_dir)
    if calibration is None or len(digests) != len(scores):
        raise ValueError("release scores need a current calibration and one score per digest")
    content = {"format": FORMAT, "weights_sha256": _weights_digest(model_dir),
               "reference_sha256": _reference_digest(model_dir), "k": calibration.k,
               "scores": {d: round(float(v), 5) for d, v in zip(digests, scores, strict=True)}}
    path = model_dir / RELEASE_SCORES_FILE
    path.write_text(json.dumps(content, separators=(",", ":")) + "\n", encoding="utf-8")
    path.chmod(umask_mode(0o666))
    return path


def read_release_scores(model_dir: Path, calibration: Calibration | None) -> dict[str, float]:
    """sha256 -> OOD score of the release images; {} when absent or fitted for other weights or reference."""
    path = Path(model_dir) / RELEASE_SCORES_FILE
    if calibration is None or not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        scores = {str(k): float(v) for k, v in content["scores"].items()}
        current = (content["weights_sha256"] == _weights_digest(model_dir)
                   and content["reference_sha256"] == _reference_digest(model_dir) and content["k"] == calibration.k)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"model release scores in {model_dir} are damaged ({str(exc)[:80]})") from None
    return scores if current else {}


def score_release(model_dir: Path, source_dir: Path, progress: Any = None) -> int:
    """Embed every release image with the checkpoint and store their OOD scores (without refitting)."""
    from ..progress import silent
    from ..source import load_source, sha256_file
    from .preprocess import load_many
    from .runtime import load_encoder

    calibration = load_calibration(model_dir)
    if calibration is None:
        raise BundleError(f"{model_dir}: {calibration_status(model_dir)}")
    encoder = load_encoder(model_dir, calibrated=False)
    source = load_source(source_dir, check_images=False)
    paths = [source.image_path(d["image"]) for d in source.images]
    with (progress or silent)("Scoring release images", 1) as advance:
        _, features = encode_with_features(encoder, load_many(paths, encoder.size))
        advance(1)
    write_release_scores(model_dir, [sha256_file(p) for p in paths], calibration.scores(features))
    return len(paths)


def calibrate_checkpoint(model_dir: Path, source_dir: Path, progress: Any = None) -> dict[str, Any]:
    """Fit and store the calibration of the checkpoint in ``model_dir`` on a release's splits.

    Embeds every train, dev and test image from the source PNGs (the library's own
    preprocessing) with the uncalibrated encoder; returns what was written.
    """
    from ..progress import silent
    from ..source import load_source, sha256_file
    from .preprocess import load_many
    from .prompts import truth_of
    from .runtime import load_encoder

    progress = progress or silent
    encoder = load_encoder(model_dir, calibrated=False)
    source = load_source(source_dir, check_images=False)
    splits: dict[str, tuple[np.ndarray, np.ndarray, list[dict[str, str]]]] = {}
    digests: list[str] = []
    for split in SPLITS:
        docs = [d for d in source.images if source.splits.get(d["U_id"]) == split]
        with progress(f"Embedding {split}", 1) as advance:
            pictures = load_many([source.image_path(d["image"]) for d in docs], encoder.size)
            embeddings, features = encode_with_features(encoder, pictures)
            advance(1)
        splits[split] = (embeddings, features, [truth_of(d) for d in docs])
        digests += [sha256_file(source.image_path(d["image"])) for d in docs]
    kind = "stage features" if hasattr(encoder, "encode_with_features") else "embeddings"
    content, reference = fit_calibration(encoder.head, splits, kind)
    write_calibration(model_dir, content, reference)
    features = np.concatenate([splits[s][1] for s in SPLITS])
    write_release_scores(model_dir, digests, ood_scores(features, reference.astype(np.float16).astype(np.float32),
                                                        OOD_K))
    return content
