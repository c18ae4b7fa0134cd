"""The model's answer for every image of a bundle, stored as data (``Prediction``).

``bundle build`` gives each ``Image_Descriptions`` and ``Image_Reports`` document a
``Prediction`` sub-document, and the Parquet tables ``pred_*`` columns, so a query or SQL
can set the model beside the labels (``WHERE pred_modality <> modality``). The answer is
:func:`~.classify.answer_one`'s, the rule ``classify`` applies to a file, fed with what the
build already has, so it costs no image tower for the release:

* probabilities: the image's embedding (shipped or computed, :func:`~medpix_tui.model.write_embeddings`)
  through the zero-shot head, calibrated when the checkpoint's calibration is current;
* the out-of-distribution score: the release images' scores ship in the checkpoint keyed
  by file sha256 (:func:`~.calibration.read_release_scores`); the other images' stage
  features are computed here, with the numpy tower when it has one.

``Prediction`` fields: ``modality`` and ``location`` (the model's most probable class, even
when unsure, so disagreements stay visible), ``modality_p`` and ``location_p`` (their
probabilities), ``probabilities`` (per task, per class), ``calibrated``, ``ood`` (the
familiarity score, None without a calibration), ``status`` (``ok`` or ``unsure``, as
``classify`` says), ``reason`` (why unsure), and per task ``<task>_vs_label``: ``same``
or ``differs`` from the image's label (``Type``, ``Location Category``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import Progress, silent
from ..session import FACETS as SESSION_FACETS

#: The ``Prediction`` fields that have a Parquet column ``pred_<name>``, and their types.
COLUMNS = {"modality": "string", "modality_p": "float64", "location": "string", "location_p": "float64",
           "ood": "float64", "status": "string"}
#: The label each task's prediction is set against.
TASK_FIELDS = {"modality": "Type", "location": "Location Category"}
SAME, DIFFERS = "same", "differs"
#: The facets "prediction vs label" per task, as (key, title, document path): the search session's
#: own rows, each counting ``same`` and ``differs``.
FACETS = tuple((f.key, f.title, f.path) for f in SESSION_FACETS if f.path.startswith("Prediction."))


def prediction_of(answer: dict[str, Any]) -> dict[str, Any]:
    """The stored ``Prediction`` of one :func:`~.classify.answer_one` answer."""
    probs = answer["probabilities"]
    location = max(probs["location"], key=probs["location"].__getitem__)
    return {"modality": answer["model_modality"], "modality_p": answer["model_probability"],
            "location": location, "location_p": probs["location"][location], "probabilities": probs,
            "calibrated": answer["calibrated"], "ood": answer["ood"]["score"] if answer["ood"] else None,
            "status": answer["status"], "reason": answer["reason"]}


def predict_images(model_dir: Path, images: Sequence[tuple[str, Path]], embeddings: np.ndarray,
                   pictures: Mapping[str, np.ndarray] | None = None,
                   facts: Mapping[str, Mapping[str, Any]] | None = None,
                   progress: Progress = silent) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """``Prediction`` of every ``(image id, file)`` from its unit embedding (rows of ``embeddings``).

    ``pictures`` (id -> the model's picture) spares decoding the images that need stage
    features; ``facts`` (id -> :func:`~.preprocess.picture_facts`) applies classify's
    colour, blank and grey-level rules. Returns the predictions by image id and what the bundle manifest records.
    """
    from ..source import sha256_file
    from .calibration import load_calibration, read_release_scores
    from .classify import UNSURE, answer_one
    from .preprocess import ModelInput, load_square
    from .zeroshot import load_head

    calibration = load_calibration(model_dir)
    head = load_head(model_dir)
    if calibration is not None:
        head = head.with_temperature(calibration.temperature)
    probabilities = head.probabilities(np.asarray(embeddings, np.float32)) if len(images) else {}
    scores: list[float | None] = [None] * len(images)
    reused = 0
    if calibration is not None and images:
        shipped = read_release_scores(model_dir, calibration)
        digests = [sha256_file(path) for _, path in images] if shipped else []
        todo = [i for i in range(len(images)) if not shipped or digests[i] not in shipped]
        for i in set(range(len(images))) - set(todo):
            scores[i] = shipped[digests[i]]
        reused = len(images) - len(todo)
        if todo:
            from .calibration import encode_with_features
            from .runtime import load_encoder

            encoder = load_encoder(model_dir, calibrated=False)
            with progress("Scoring images", 1) as advance:
                batch = np.stack([pictures[images[i][0]] if pictures is not None and images[i][0] in pictures
                                  else load_square(images[i][1], encoder.size) for i in todo])
                _, features = encode_with_features(encoder, batch)
                for i, score in zip(todo, calibration.scores(features), strict=True):
                    scores[i] = float(score)
                advance(1)
    out: dict[str, dict[str, Any]] = {}
    for row, (name, path) in enumerate(images):
        item = ModelInput(Path(path), None, None, **(facts or {}).get(name, {}))
        probs = {task: p[row] for task, p in probabilities.items()}
        out[name] = prediction_of(answer_one(head.classes, calibration, item, probs, scores[row]))
    info = {"count": len(out), "calibrated": calibration is not None,
            "ood_reused": reused if calibration is not None else 0,
            "ood_computed": len(images) - reused if calibration is not None else 0,
            "unsure": sum(p["status"] == UNSURE for p in out.values())}
    return out, info


def attach(docs: Sequence[dict[str, Any]], predictions: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of image documents with their ``Prediction``, its ``<task>_vs_label`` set from
    the document's labels (``same`` or ``differs``: what the facets count and filter on)."""
    out = []
    for doc in docs:
        prediction = predictions.get(doc["image"])
        if prediction is None:
            out.append(doc)
            continue
        checks = {f"{task}_vs_label": SAME if prediction[task] == doc.get(label) else DIFFERS
                  for task, label in TASK_FIELDS.items()}
        out.append({**doc, "Prediction": {**prediction, **checks}})
    return out


def differs_filter(task: str) -> dict[str, Any]:
    """The store filter of "the model's answer differs from the label" for a task.

    Documents of a bundle without a model have no Prediction and never match.
    """
    if task not in TASK_FIELDS:
        raise ValueError(f"unknown task {task!r}: choose {' or '.join(TASK_FIELDS)}")
    return {f"Prediction.{task}_vs_label": DIFFERS}
