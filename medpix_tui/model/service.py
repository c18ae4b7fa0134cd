"""The model's features over one bundle, for the CLI and the TUI alike.

:class:`BundleModel` loads each part on first use and keeps it: the image encoder (numpy
when the tower allows, so classify imports no torch), its calibration, the bundle's
embeddings, and the text tower (MiniLM in numpy where the checkpoint allows; 90 MB of
weights, so only text search loads it). ``eval`` needs only the head when every image of
the split has a shipped release vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import BundleError, InputError
from ..progress import Progress, silent
from .calibration import Calibration, calibration_status, load_calibration
from .checkpoint import is_checkpoint, read_metadata
from .prompts import PAPER_ACCURACY, TASKS, truth_of
from .similarity import EmbeddingIndex, load_index, top_cases, top_images


def check_search_text(text: str) -> None:
    """InputError for a text search cannot rank by: empty, or without a letter or digit (emoji
    and punctuation alone rank the images arbitrarily)."""
    if not text.strip():
        raise InputError("the search text is empty")
    if not any(c.isalnum() for c in text):
        raise InputError("the search text has no letters or digits: describe the images in words")


def unknown_words_note(words: list[str]) -> str:
    """What a text search says of words no caption or case holds ("xqzzv", a typo): it still ranks."""
    return (f"no caption or case of the bundle holds {', '.join(words[:5])}{', ...' if len(words) > 5 else ''}: "
            "the ranking reads only what the text model makes of it")


class BundleModel:
    """Classification, evaluation, similar images and text search over a bundle."""

    def __init__(self, bundle: Any) -> None:
        if not is_checkpoint(bundle.model_dir):
            raise BundleError(f"the bundle at {bundle.path} has no model checkpoint (rebuild it with one)")
        self.bundle = bundle

    @cached_property
    def encoder(self) -> Any:
        """The checkpoint's image encoder, its head calibrated when the checkpoint has a calibration."""
        from .runtime import load_encoder

        return load_encoder(self.bundle.model_dir)

    @cached_property
    def head(self) -> Any:
        """The zero-shot head, calibrated like :attr:`encoder`'s, without loading the image tower."""
        if "encoder" in self.__dict__:
            return self.encoder.head
        from .zeroshot import load_head

        head = load_head(self.bundle.model_dir)
        return head if self.calibration is None else head.with_temperature(self.calibration.temperature)

    @cached_property
    def calibration(self) -> Calibration | None:
        return load_calibration(self.bundle.model_dir)

    @property
    def calibration_note(self) -> str | None:
        """Why probabilities are uncalibrated and nothing is called unsure, or None."""
        return calibration_status(self.bundle.model_dir)

    @cached_property
    def index(self) -> EmbeddingIndex:
        return load_index(self.bundle.embeddings_dir)

    @cached_property
    def text_tower(self) -> Any:
        from .text import load_text_tower

        return load_text_tower(self.bundle.model_dir)

    @cached_property
    def docs(self) -> dict[str, dict[str, Any]]:
        """Image documents by image id."""
        return {d["image"]: d for d in self.bundle.images()}

    def load(self, path: Path, frame: int | None = None) -> Any:
        """One file read for the model (:func:`~.preprocess.load_input`); InputError when unusable."""
        from .preprocess import load_input

        return load_input(Path(path), self.encoder.size, frame)

    def load_study(self, path: Path, frame: int | None = None) -> list[Any]:
        """One file of a study read for the model: each sampled frame of a multi-frame DICOM
        file (:func:`~.preprocess.load_study_inputs`)."""
        from .preprocess import load_study_inputs

        return load_study_inputs(Path(path), self.encoder.size, frame)

    def embed_file(self, path: Path, frame: int | None = None) -> Any:
        """The unit embedding of one image file, read as ``classify`` reads it (so a folder, a
        blank picture or a DICOM file of another modality gets its one-line error)."""
        loaded = self.load(path, frame)
        if loaded.picture is None:
            raise InputError(f"{path}: DICOM Modality {loaded.dicom_modality} is not CT or MR")
        if loaded.blank is not None:
            raise InputError(f"{path}: the image is blank (every pixel is {loaded.blank}): nothing to compare")
        return self.encoder.encode_arrays(loaded.picture[None])[0]

    def answer(self, inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Answers for loaded files (:func:`~.classify.answer_images`), in one batch."""
        from .classify import answer_images

        return answer_images(self.encoder, self.calibration, inputs)

    def classify(self, path: Path, frame: int | None = None) -> dict[str, Any]:
        """Modality and location of one image file, with calibrated probabilities."""
        return self.answer([self.load(path, frame)])[0]

    def classify_study(self, paths: Sequence[Path], frame: int | None = None) -> dict[str, Any]:
        """One answer for the images of one study, with each image's answer under ``images``."""
        from .classify import pool_study

        return pool_study(self.answer([item for p in paths for item in self.load_study(p, frame)]))

    def evaluate(self, split: str, progress: Progress = silent, by_case: bool = False,
                 from_pixels: bool = False) -> dict[str, Any]:
        """Zero-shot accuracy with the paper's prompts on one split of the bundle's images.

        An image whose file's sha256 has a vector shipped with the checkpoint (:mod:`.release`)
        takes it, the others are embedded; ``from_pixels`` embeds every image. Both give the
        same figures (the shipped vectors are the tower's own, in float32), the first in a
        fraction of the time. ``embeddings`` in the result says how many were reused.
        """
        from .evaluate import evaluate_embeddings
        from .release import merge_vectors, shipped_vectors

        docs = [d for d in self.docs.values() if self.bundle.split_of(d["U_id"]) == split]
        if not docs:
            raise InputError(f"the bundle has no images in split {split!r}")
        paths = [self.bundle.image_path(d["image"]) for d in docs]
        known = [None] * len(paths) if from_pixels else shipped_vectors(self.bundle.model_dir, paths)
        todo = [i for i, v in enumerate(known) if v is None]
        fresh = self.encoder.encode_files([paths[i] for i in todo], progress) if todo else None
        sure = [(d.get("Prediction") or {}).get("status", "ok") == "ok" for d in docs]  # as classify answered
        result = evaluate_embeddings(self.head, split, merge_vectors(known, fresh), [truth_of(d) for d in docs],
                                     [d["U_id"] for d in docs], by_case, sure)
        metadata = read_metadata(self.bundle.model_dir)
        return {**result, "model": str(metadata.get("name", "")),
                "calibrated": self.calibration is not None,
                "embeddings": {"reused": len(paths) - len(todo), "embedded": len(todo)},
                "paper": {f"{t}_accuracy": PAPER_ACCURACY[t] for t in TASKS},
                "claimed": metadata.get("evaluation", {}).get(split)}

    def _image_row(self, image_id: str, score: float) -> dict[str, Any]:
        doc = self.docs.get(image_id, {})
        return {"image": image_id, "case": doc.get("U_id"), "score": round(score, 4),
                "modality": doc.get("Type"), "location": doc.get("Location Category")}

    def _case_rows(self, query: Any, k: int, exclude: set[str]) -> list[dict[str, Any]]:
        case_of = {name: doc["U_id"] for name, doc in self.docs.items()}
        rows = top_cases(query, self.index, case_of, k, exclude)
        for row in rows:
            case = self.bundle.store.get_case(row["case"]) or {}
            row["title"] = ((case.get("Case") or {}).get("Title") or "").strip()
        return rows

    @cached_property
    def image_of_digest(self) -> dict[str, str]:
        """Bundle image ids by the sha256 of their PNG (the manifest's), to know a file for one."""
        from ..bundle import IMAGE_DIR
        from ..source import IMAGE_SUFFIX

        files = self.bundle.manifest.get("files") or {}
        return {str(files[rel]["sha256"]): name for name in self.docs
                if isinstance(files.get(rel := f"{IMAGE_DIR}/{name}{IMAGE_SUFFIX}"), dict)
                and "sha256" in files[rel]}

    def image_query(self, target: str, frame: int | None = None) -> tuple[Any, str | None]:
        """The unit vector of a bundle image id or an image file, and the bundle case it
        belongs to: ``similar`` and ``similar-cases --image`` leave that case out, since its
        own slices are the nearest images of all and tell nothing new. A file that is a bundle
        image's PNG (the same bytes) counts as that image; any other file has no case."""
        if target in self.docs:
            if frame is not None:
                raise InputError(f"--frame is for a DICOM file; {target!r} is an image of the bundle")
            return self.index.row(target), self.docs[target]["U_id"]
        path = Path(target)
        if target.strip() and (path.exists() or path.is_symlink()):
            query = self.embed_file(path, frame)  # checks the file, as classify reads it
            from ..source import sha256_file

            same = self.image_of_digest.get(sha256_file(path)) if frame is None else None
            return query, None if same is None else self.docs[same]["U_id"]
        raise InputError(f"{target!r} is neither an image id of the bundle nor a file")

    def similar(self, target: str, k: int = 5, frame: int | None = None) -> dict[str, Any]:
        """The ``k`` images and cases most similar to a bundle image id or an image file
        (for a bundle image, or a file holding one's PNG, its case and all its images left out)."""
        if k < 1:
            raise InputError("k must be at least 1")
        query, own_case = self.image_query(target, frame)
        own = {name for name, doc in self.docs.items() if doc["U_id"] == own_case} if own_case else set()
        images = top_images(query, self.index, k, exclude=own)
        cases = self._case_rows(query, k, exclude={own_case} if own_case else set())
        return {"query": target, "kind": "image" if target in self.docs else "file",
                "images": [self._image_row(i, s) for i, s in images], "cases": cases}

    def search(self, text: str, k: int = 10) -> dict[str, Any]:
        """The ``k`` images (and cases) whose embeddings best match a text, by cosine."""
        check_search_text(text)
        if k < 1:
            raise InputError("k must be at least 1")
        query = self.text_tower.encode([text])[0]
        images = top_images(query, self.index, k)
        result = {"query": text, "images": [self._image_row(i, s) for i, s in images],
                  "cases": self._case_rows(query, k, exclude=set())}
        if unknown := self.bundle.store.search_index().unknown_words(text):
            result["note"] = unknown_words_note(unknown)
        return result
