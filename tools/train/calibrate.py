"""Fit a checkpoint's calibration (a method per task, the OOD threshold) and store it beside it.

    python -m tools.train.calibrate [--model bundle/model] [--source ../shared/medpix-2.0]

Writes ``calibration.json``, ``ood_reference.npy`` and ``ood_release.json`` (the release
images' OOD scores ``bundle build`` reuses) into the checkpoint folder; the library only
reads them (:mod:`medpix_tui.model.calibration`). Rerun it whenever the weights change.
Prints the figures: per task the dev cross-validation of every candidate method, the
chosen one, ECE before and after on dev and test (each beside its sampling floor: the ECE a
perfectly calibrated model would show on the same images, :func:`ece_floor`), and the OOD
acceptance.
``--scores-only`` writes only ``ood_release.json`` for the current calibration.

**Choosing the method, on dev only.** Dev's 197 images come from 67 cases, and a case's
images look alike, so the candidates are compared by cross-validation over folds of whole
cases (:data:`FOLDS` folds, :data:`REPEATS` seeded shuffles): each fold is calibrated by a
fit on the other four, and the out-of-fold probabilities give a 15-bin ECE and an NLL.
The method with the lowest mean ECE among those the library applies (:data:`APPLIED`:
a temperature, or none) is chosen and fitted on all of dev; test is scored once, after.
The others (vector scaling, histogram binning and isotonic regression of the top
probability) are compared and reported; should one beat the chosen method on dev, the
tool says so (the library would need to learn to apply it).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medpix_tui.model.calibration import (
    CALIBRATION_FILE,
    ECE_BINS,
    FORMAT,
    OOD_DEV_KEEP,
    OOD_K,
    OOD_REFERENCE_FILE,
    RELEASE_SCORES_FILE,
    Calibration,
    calibration_status,
    ece,
    ece_floor,
    encode_with_features,
    load_calibration,
    ood_scores,
    reference_digest,
    weights_digest,
)
from medpix_tui.model.zeroshot import ZeroShotHead, softmax
from medpix_tui.source import SPLITS

from . import ToolParser, one_line_errors

ROOT = Path(__file__).resolve().parents[2]
FOLDS = 5
REPEATS = 20
#: The methods the library applies (a temperature per task; 1 is none).
APPLIED = ("temperature_nll", "temperature_ece", "none")

Splits = dict[str, tuple[np.ndarray, np.ndarray, list[dict[str, str]], list[str]]]


def nll(logits: np.ndarray, truth: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true classes at a temperature."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(truth)), truth].mean())


def nll_of(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """Mean negative log-likelihood of probabilities (floored at 1e-12)."""
    return float(-np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-12, 1.0)).mean())


def _golden(f: Callable[[float], float], lo: float, hi: float, steps: int = 60) -> float:
    ratio = (np.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(steps):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    return (lo + hi) / 2


def fit_temperature(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature minimising the NLL (golden-section search over log T in [1/20, 20])."""
    log_t = _golden(lambda x: nll(logits, truth, float(np.exp(x))), np.log(0.05), np.log(20.0))
    return round(float(np.exp(log_t)), 4)


#: Temperatures the ECE fit tries (ECE is a step function of T: a grid, not a line search).
ECE_GRID = np.exp(np.linspace(np.log(0.2), np.log(5.0), 241))


def fit_temperature_ece(logits: np.ndarray, truth: np.ndarray) -> float:
    """The temperature on :data:`ECE_GRID` with the lowest 15-bin ECE (the smallest of ties)."""
    scores = [ece(softmax(logits / t), truth) for t in ECE_GRID]
    return round(float(ECE_GRID[int(np.argmin(scores))]), 4)


def fit_vector(logits: np.ndarray, truth: np.ndarray, steps: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Vector scaling: a scale and a bias per class, by NLL (Adam on log-scale and bias); may move the argmax."""
    k = logits.shape[1]
    params = np.zeros(2 * k)
    moment, second = np.zeros_like(params), np.zeros_like(params)
    onehot = np.eye(k)[truth]
    for step in range(1, steps + 1):
        scale = np.exp(params[:k])
        p = softmax(logits * scale + params[k:])
        g = (p - onehot) / len(truth)
        grad = np.concatenate([(g * logits).sum(axis=0) * scale, g.sum(axis=0)])
        moment = 0.9 * moment + 0.1 * grad
        second = 0.999 * second + 0.001 * grad * grad
        params -= 0.02 * (moment / (1 - 0.9 ** step)) / (np.sqrt(second / (1 - 0.999 ** step)) + 1e-8)
    return np.exp(params[:k]), params[k:]


def with_top(probabilities: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Probabilities whose largest is replaced by ``top``, the others rescaled to sum to 1; the
    new top is kept above the runner-up, so the answer (argmax) does not change."""
    rows = np.arange(len(probabilities))
    best = probabilities.argmax(axis=1)
    p_top = probabilities[rows, best]
    second = np.sort(probabilities, axis=1)[:, -2] if probabilities.shape[1] > 1 else np.zeros(len(rows))
    floor = second / np.maximum(1.0 - p_top + second, 1e-12) + 1e-6
    new = np.clip(np.maximum(top, floor), 0.0, 1.0)
    out = probabilities * ((1.0 - new) / np.maximum(1.0 - p_top, 1e-12))[:, None]
    out[rows, best] = new
    return out


def fit_histogram(probabilities: np.ndarray, truth: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Histogram binning of the top probability: equal-count bins, each mapped to its accuracy."""
    top, right = probabilities.max(axis=1), probabilities.argmax(axis=1) == truth
    edges = np.quantile(top, np.linspace(0, 1, bins + 1))
    edges[0], edges[-1] = 0.0, 1.0
    which = np.clip(np.searchsorted(edges, top, side="right") - 1, 0, bins - 1)
    values = np.array([right[which == b].mean() if (which == b).any() else (edges[b] + edges[b + 1]) / 2
                       for b in range(bins)])
    return edges, values


def apply_histogram(probabilities: np.ndarray, model: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    edges, values = model
    which = np.clip(np.searchsorted(edges, probabilities.max(axis=1), side="right") - 1, 0, len(values) - 1)
    return with_top(probabilities, values[which])


def fit_isotonic(probabilities: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic regression (pool adjacent violators) of being right on the top probability."""
    order = np.argsort(probabilities.max(axis=1), kind="stable")
    x = probabilities.max(axis=1)[order]
    y = (probabilities.argmax(axis=1) == truth)[order].astype(float)
    blocks: list[list[float]] = []  # [sum, count, first x, last x]
    for xi, yi in zip(x, y, strict=True):
        blocks.append([yi, 1.0, xi, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            last = blocks.pop()
            blocks[-1] = [blocks[-1][0] + last[0], blocks[-1][1] + last[1], blocks[-1][2], last[3]]
    xs = np.array([v for b in blocks for v in (b[2], b[3])])
    ys = np.array([b[0] / b[1] for b in blocks for _ in (0, 1)])
    return xs, ys


def apply_isotonic(probabilities: np.ndarray, model: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return with_top(probabilities, np.interp(probabilities.max(axis=1), *model))


Method = tuple[Callable[[np.ndarray, np.ndarray], Any], Callable[[np.ndarray, Any], np.ndarray]]


def _on_temperature(fit: Callable[[np.ndarray, np.ndarray], Any],
                    apply: Callable[[np.ndarray, Any], np.ndarray]) -> Method:
    """A top-probability map fitted after the NLL temperature (which keeps the argmax)."""
    def fit_both(logits: np.ndarray, truth: np.ndarray) -> Any:
        t = fit_temperature(logits, truth)
        return t, fit(softmax(logits / t), truth)

    return fit_both, lambda logits, model: apply(softmax(logits / model[0]), model[1])


#: Every candidate: (fit on logits and truth, apply to logits) -> probabilities.
METHODS: dict[str, Method] = {
    "none": (lambda logits, truth: 1.0, lambda logits, t: softmax(logits)),
    "temperature_nll": (fit_temperature, lambda logits, t: softmax(logits / t)),
    "temperature_ece": (fit_temperature_ece, lambda logits, t: softmax(logits / t)),
    "vector_scaling": (fit_vector, lambda logits, m: softmax(logits * m[0] + m[1])),
    "histogram_binning": _on_temperature(fit_histogram, apply_histogram),
    "isotonic": _on_temperature(fit_isotonic, apply_isotonic),
}


def case_folds(cases: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Each image's fold, whole cases together (a seeded shuffle of the cases, dealt round)."""
    names = sorted(set(cases))
    dealt = dict(zip(names, np.random.default_rng(seed).permutation(len(names)) % folds, strict=True))
    return np.array([dealt[c] for c in cases])


def cross_validate(logits: np.ndarray, truth: np.ndarray, cases: Sequence[str], folds: int = FOLDS,
                   repeats: int = REPEATS) -> dict[str, dict[str, float]]:
    """Per method: mean (and spread) of the out-of-fold ECE and NLL, and the answers' accuracy.

    At most one fold per case; {} when dev has fewer than two cases (nothing to hold out).
    """
    folds = min(folds, len(set(cases)))
    out: dict[str, dict[str, float]] = {}
    if folds < 2:
        return out
    for name, (fit, apply) in METHODS.items():
        eces, nlls, accuracy = [], [], []
        for seed in range(repeats):
            fold = case_folds(cases, folds, seed)
            probabilities = np.zeros_like(logits, dtype=float)
            for k in range(folds):
                held = fold == k
                probabilities[held] = apply(logits[held], fit(logits[~held], truth[~held]))
            eces.append(ece(probabilities, truth))
            nlls.append(nll_of(probabilities, truth))
            accuracy.append(float((probabilities.argmax(axis=1) == truth).mean()))
        out[name] = {"ece": round(float(np.mean(eces)), 4), "ece_sd": round(float(np.std(eces)), 4),
                     "nll": round(float(np.mean(nlls)), 4), "accuracy": round(float(np.mean(accuracy)), 4)}
    return out


def choose(cv: dict[str, dict[str, float]]) -> str:
    """The applied method with the lowest cross-validated ECE (NLL breaks ties); without a
    cross-validation (a dev split of one case), the NLL temperature."""
    if not cv:
        return "temperature_nll"
    return min(APPLIED, key=lambda name: (cv[name]["ece"], cv[name]["nll"]))


def _labels(truths: Sequence[dict[str, str]], head: ZeroShotHead, task: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(head.classes[task])}
    return np.array([index[t[task]] for t in truths], dtype=int)


def fit_calibration(head: ZeroShotHead, splits: Splits, feature_kind: str) -> tuple[dict[str, Any], np.ndarray]:
    """Fit on ``splits`` (``train``, ``dev``, optionally ``test``: embeddings, OOD features, truths, cases).

    The method per task, its temperature and the OOD threshold come from dev, the OOD
    reference from train; test is only reported. Returns ``calibration.json``'s content
    (without the weights digest) and the reference.
    """
    dev_emb, dev_feat, dev_truth, dev_cases = splits["dev"]
    reference = splits["train"][1]
    logits = head.logits(dev_emb)
    temperature: dict[str, float] = {}
    methods: dict[str, Any] = {}
    for task in head.classes:
        labels = _labels(dev_truth, head, task)
        cv = cross_validate(logits[task], labels, dev_cases)
        chosen = choose(cv)
        temperature[task] = float(METHODS[chosen][0](logits[task], labels))
        better = sorted(name for name in cv if name not in APPLIED and cv[name]["ece"] < cv[chosen]["ece"])
        methods[task] = {"method": chosen, "dev_cv": cv, "better_on_dev_cv_but_not_applied": better}
    dev_scores = ood_scores(dev_feat, reference)
    threshold = float(np.quantile(dev_scores, 1 - OOD_DEV_KEEP))
    figures: dict[str, Any] = {}
    for split in ("dev", "test"):
        if split not in splits:
            continue
        emb, feat, truth, _ = splits[split]
        split_logits = head.logits(emb)
        row: dict[str, Any] = {"n": len(truth),
                               "ood_accepted": round(float((ood_scores(feat, reference) >= threshold).mean()), 4)}
        for task in head.classes:
            labels = _labels(truth, head, task)
            row[f"{task}_ece_uncalibrated"] = round(ece(softmax(split_logits[task]), labels), 4)
            calibrated = softmax(split_logits[task] / temperature[task])
            measured = ece(calibrated, labels)
            row[f"{task}_ece"] = round(measured, 4)
            row[f"{task}_ece_floor"] = ece_floor(calibrated, measured)
            row[f"{task}_nll_uncalibrated"] = round(nll(split_logits[task], labels, 1.0), 4)
            row[f"{task}_nll"] = round(nll(split_logits[task], labels, temperature[task]), 4)
        figures[split] = row
    content = {"format": FORMAT, "temperature": temperature, "method": methods,
               "method_chosen_on": f"dev only: {FOLDS}-fold cross-validation over whole cases, {REPEATS} seeded "
                                   f"shuffles, {ECE_BINS}-bin ECE of the out-of-fold probabilities (lowest mean "
                                   "among the methods the library applies); test scored once, after",
               "ood": {"score": f"mean cosine to the {OOD_K} nearest training images' {feature_kind}",
                       "features": feature_kind, "k": OOD_K, "threshold": round(threshold, 5),
                       "dev_keep": OOD_DEV_KEEP, "reference": OOD_REFERENCE_FILE, "train_images": len(reference)},
               "figures": figures}
    return content, reference


def write_calibration(model_dir: Path, content: dict[str, Any], reference: np.ndarray) -> Path:
    """Store the calibration beside the checkpoint's weights, bound to their digest."""
    import io

    from medpix_tui.atomic import write_atomic

    model_dir = Path(model_dir)
    buffer = io.BytesIO()
    np.save(buffer, reference.astype(np.float16))
    write_atomic(model_dir / OOD_REFERENCE_FILE, buffer.getvalue())
    content = {**content, "weights_sha256": weights_digest(model_dir)}
    path = model_dir / CALIBRATION_FILE
    write_atomic(path, json.dumps(content, indent=2) + "\n")
    return path


def write_release_scores(model_dir: Path, digests: Sequence[str], scores: np.ndarray) -> Path:
    """Store the release images' OOD scores under their files' sha256, bound to the weights and reference."""
    from medpix_tui.atomic import write_atomic

    model_dir = Path(model_dir)
    calibration: Calibration | None = load_calibration(model_dir)
    if calibration is None or len(digests) != len(scores):
        raise ValueError("release scores need a current calibration and one score per digest")
    content = {"format": FORMAT, "weights_sha256": weights_digest(model_dir),
               "reference_sha256": reference_digest(model_dir), "k": calibration.k,
               "scores": {d: round(float(v), 5) for d, v in zip(digests, scores, strict=True)}}
    path = model_dir / RELEASE_SCORES_FILE
    write_atomic(path, json.dumps(content, separators=(",", ":")) + "\n")
    return path


def score_release(model_dir: Path, source_dir: Path, progress: Any = None) -> int:
    """Embed every release image with the checkpoint and store their OOD scores (without refitting)."""
    from medpix_tui.errors import BundleError
    from medpix_tui.model.preprocess import load_many
    from medpix_tui.model.runtime import load_encoder
    from medpix_tui.progress import silent
    from medpix_tui.source import load_source, sha256_file

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
    from medpix_tui.model.preprocess import load_many
    from medpix_tui.model.prompts import truth_of
    from medpix_tui.model.runtime import load_encoder
    from medpix_tui.progress import silent
    from medpix_tui.source import load_source, sha256_file

    progress = progress or silent
    encoder = load_encoder(model_dir, calibrated=False)
    source = load_source(source_dir, check_images=False)
    splits: Splits = {}
    digests: list[str] = []
    for split in SPLITS:
        docs = [d for d in source.images if source.splits.get(d["U_id"]) == split]
        with progress(f"Embedding {split}", 1) as advance:
            pictures = load_many([source.image_path(d["image"]) for d in docs], encoder.size)
            embeddings, features = encode_with_features(encoder, pictures)
            advance(1)
        splits[split] = (embeddings, features, [truth_of(d) for d in docs], [d["U_id"] for d in docs])
        digests += [sha256_file(source.image_path(d["image"])) for d in docs]
    kind = "stage features" if hasattr(encoder, "encode_with_features") else "embeddings"
    content, reference = fit_calibration(encoder.head, splits, kind)
    write_calibration(model_dir, content, reference)
    features = np.concatenate([splits[s][1] for s in SPLITS])
    write_release_scores(model_dir, digests, ood_scores(features, reference.astype(np.float16).astype(np.float32),
                                                        OOD_K))
    return content


@one_line_errors()
def main() -> None:
    parser = ToolParser("calibrate", __doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "bundle" / "model",
                        help="the checkpoint folder to calibrate (default: %(default)s, the one this checkout ships)")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "medpix-2.0",
                        help="the release whose splits fit it (default: %(default)s)")
    parser.add_argument("--scores-only", action="store_true",
                        help="only score the release images against the current calibration")
    args = parser.parse_args()
    from medpix_tui.progress import rich_progress

    if args.scores_only:
        print(f"scored {score_release(args.model, args.source, rich_progress())} release images")
        return

    content = calibrate_checkpoint(args.model, args.source, rich_progress())
    print(json.dumps({"temperature": content["temperature"], "method": content["method"], "ood": content["ood"],
                      "figures": content["figures"]}, indent=2))
    for task, info in content["method"].items():
        if info["better_on_dev_cv_but_not_applied"]:
            print(f"note: {task}: {', '.join(info['better_on_dev_cv_but_not_applied'])} beat {info['method']} on "
                  "dev cross-validation, but the library applies only temperatures")


if __name__ == "__main__":
    main()
