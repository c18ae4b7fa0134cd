"""The paper's manual curation as code: keep clear CT and MR images, flag the rest for review.

An image is dropped when its metadata says it is not a CT or MR scan, or looks like a
drawing, a photograph, a montage, an annotated image or a chart (from Modality, Plane and
caption keywords). Every flagged image goes to a review CSV with its reasons; a person
edits the ``decision`` column (or lists ids with ``--keep``/``--drop``) and passes the file
back with ``--overrides``. An override names an image id or a whole case id.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medpix_tui.errors import InputError

REVIEW_FILE = "curation_review.csv"
REVIEW_COLUMNS = ("image", "U_id", "decision", "reasons", "Modality", "Plane", "Caption")
KEEP, DROP = "keep", "drop"

_CAPTION_FLAGS = {
    "drawing": re.compile(r"\b(drawings?|illustrations?|diagrams?|schematics?|cartoons?|sketch(es)?)\b", re.IGNORECASE),
    "photograph": re.compile(r"\b(photo(graph)?s?|gross (specimen|pathology)|intra-?operative)\b", re.IGNORECASE),
    "montage": re.compile(r"\b(montage|collage)\b", re.IGNORECASE),
    "annotated": re.compile(r"\b(arrows?|arrowheads?|annotat(ed|ions?)|circled|asterisks?|outlined)\b", re.IGNORECASE),
}
_MODALITY_FLAGS = {
    "drawing": re.compile(r"\b(drawing|illustration)\b", re.IGNORECASE),
    "photograph": re.compile(r"\b(photo(graph)?|gross)\b", re.IGNORECASE),
    "montage": re.compile(r"\bmontage\b", re.IGNORECASE),
    "chart": re.compile(r"\b(spectroscopy|graph|chart)\b", re.IGNORECASE),
}
_PLANE_FLAGS = {
    "drawing": re.compile(r"\bdrawing\b", re.IGNORECASE),
    "photograph": re.compile(r"\b(photograph|gross pathology)\b", re.IGNORECASE),
    "montage": re.compile(r"\bmontage\b", re.IGNORECASE),
}


def modality_type(modality: str | None) -> str | None:
    """``CT`` or ``MR`` (the release's ``Type``) for a MedPix modality, None for anything else."""
    head = re.split(r"[\s\-/(,]", (modality or "").strip().upper(), maxsplit=1)[0]
    if head in ("CT", "CTA"):
        return "CT"
    if head in ("MR", "MRI", "MRA", "MRV", "MRS"):
        return "MR"
    return None


def flag_reasons(description: dict[str, str | None]) -> list[str]:
    """Why an image's metadata says it is not a clear CT or MR scan (empty: keep it)."""
    texts = ((_MODALITY_FLAGS, description.get("Modality")), (_PLANE_FLAGS, description.get("Plane")),
             (_CAPTION_FLAGS, description.get("Caption")))
    reasons = [] if modality_type(description.get("Modality")) else ["not-ct-mr"]
    for reason in ("drawing", "photograph", "montage", "annotated", "chart"):
        if any(reason in rules and rules[reason].search(text or "") for rules, text in texts):
            reasons.append(reason)
    return reasons


@dataclass(frozen=True)
class Verdict:
    """The decision on one image, why, and whether a person overrode the rule."""

    keep: bool
    reasons: tuple[str, ...]
    overridden: bool = False

    @property
    def decision(self) -> str:
        return KEEP if self.keep else DROP


class Curator:
    """Applies the rules, then the person's overrides (by image id, else by case id)."""

    def __init__(self, overrides: dict[str, str] | None = None) -> None:
        self.overrides = dict(overrides or {})

    @classmethod
    def from_options(cls, files: Iterable[Path], keep: Iterable[str], drop: Iterable[str]) -> Curator:
        """Overrides from review CSVs, then ``--keep``/``--drop`` ids (which win)."""
        overrides: dict[str, str] = {}
        for path in files:
            overrides.update(read_overrides(path))
        overrides.update({i: KEEP for i in keep})
        overrides.update({i: DROP for i in drop})
        return cls(overrides)

    def judge(self, image: str, uid: str, description: dict[str, str | None]) -> Verdict:
        """Keep or drop one image. A CT/MR type cannot be overridden into existence."""
        reasons = tuple(flag_reasons(description))
        wanted = self.overrides.get(image, self.overrides.get(uid))
        if wanted is None or "not-ct-mr" in reasons:
            return Verdict(not reasons, reasons)
        return Verdict(wanted == KEEP, reasons, overridden=(wanted == KEEP) == bool(reasons))


def read_overrides(path: Path) -> dict[str, str]:
    """``image`` -> ``keep``/``drop`` from a CSV with those two columns (others ignored)."""
    try:
        text = Path(path).read_text("utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read overrides {path}: {exc.strerror}") from exc
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"image", "decision"} <= set(reader.fieldnames):
        raise InputError(f"overrides {path}: needs the columns 'image' and 'decision'")
    result: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        decision = (row.get("decision") or "").strip().lower()
        if decision not in (KEEP, DROP):
            raise InputError(f"overrides {path} line {line}: decision must be keep or drop, got {decision!r}")
        result[(row.get("image") or "").strip()] = decision
    return result


def review_row(image: str, uid: str, description: dict[str, str | None], verdict: Verdict) -> dict[str, str]:
    """One line of the review CSV."""
    reasons = ";".join(verdict.reasons) + (";overridden" if verdict.overridden else "")
    return {"image": image, "U_id": uid, "decision": verdict.decision, "reasons": reasons.lstrip(";"),
            "Modality": description.get("Modality") or "", "Plane": description.get("Plane") or "",
            "Caption": description.get("Caption") or ""}


def write_review(path: Path, rows: list[dict[str, str]]) -> None:
    """Write the review list (the same columns ``--overrides`` reads back)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=REVIEW_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
