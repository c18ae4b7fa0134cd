"""Add a lab's own case to a source folder, checked exactly as ingest checks it, all or nothing.

The paper asks that hospitals can grow their copy of MedPix 2.0 in the same structure. A
new case arrives as one JSON file (its ``Case_topic.json`` document and its
``Descriptions.json`` documents) plus a folder of PNG files. :func:`add_case` runs the
ingest's own checks (:mod:`medpix_tui.source`) on it, refuses ids that already exist, and
decodes every image before touching the folder. Then it copies the images under temporary
names, writes both JSON files to temporary names, and renames everything into place; if
anything fails, what was written is removed and the original files are put back. Run one
``add-case`` at a time on a given folder.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import move_into_place
from .errors import InputError, Problem, ValidationError
from .source import (
    CASES_FILE,
    IMAGE_DIR,
    IMAGE_SUFFIX,
    IMAGES_FILE,
    LOCATION_CATEGORIES,
    case_problems,
    cross_problems,
    image_problems,
    load_json,
    load_source,
    new_picture_problem,
    resolve_root,
)


@dataclass(frozen=True)
class AddCaseSummary:
    """What was added, for the one line the command prints."""

    uid: str
    images: tuple[str, ...]
    ct: int
    mr: int
    source: Path


def read_case_file(path: Path) -> tuple[Any, list[Any]]:
    """The case document and image documents of ``{"case": {...}, "images": [...]}`` (or a case with "images")."""
    path = Path(path)
    data, why = load_json(path)  # the ingest's own reader: same size cap, same messages
    if why:
        raise InputError(f"{path}: {why}")
    if not isinstance(data, dict):
        raise InputError(f"{path}: must be a JSON object, got {type(data).__name__}")
    if "case" in data:
        extra = sorted(set(data) - {"case", "images"})
        if extra:
            raise InputError(f"{path}: unexpected key(s) {', '.join(map(repr, extra))} next to 'case' and 'images'")
        case, images = data["case"], data.get("images", [])
    else:
        case = {k: v for k, v in data.items() if k != "images"}
        images = data.get("images", [])
    if not isinstance(images, list):
        raise InputError(f"{path}: 'images' must be a list of image documents, got {type(images).__name__}")
    return case, images


def _relabel(problems: list[Problem], label: str) -> list[Problem]:
    """Point problems found by the ingest checks at the user's file rather than the source's."""
    names = {CASES_FILE: f"{label} case", IMAGES_FILE: f"{label} images"}
    return [Problem(names.get(p.file, p.file), p.record, p.field, p.message) for p in problems]


#: The values of ``Description.Sex`` in the release (a new case says one of them).
SEXES = ("female", "male", "N/A")


def _problems(case: Any, images: list[Any], label: str, existing_cases: list[dict], existing_images: list[dict],
              images_dir: Path, image_dir: Path) -> list[Problem]:
    problems = case_problems(case, 0, file=f"{label} case")
    if not images:
        problems.append(Problem(f"{label} images", "", "images", "a case needs at least one image"))
    for i, doc in enumerate(images):
        problems += image_problems(doc, i, file=f"{label} images")
        category = doc.get("Location Category") if isinstance(doc, dict) else None
        if isinstance(category, str) and category not in LOCATION_CATEGORIES:  # the classes eval and the model know
            problems.append(Problem(f"{label} images", f"#{i}", "Location Category",
                                    f"must be one of {', '.join(LOCATION_CATEGORIES)}; got {category[:40]!r}"))
        desc = doc.get("Description") if isinstance(doc, dict) else None
        sex = desc.get("Sex") if isinstance(desc, dict) else None
        if isinstance(sex, str) and sex not in SEXES:
            problems.append(Problem(f"{label} images", f"#{i}", "Description.Sex",
                                    f"must be one of {', '.join(SEXES)}; got {sex[:40]!r}"))
    if problems:
        return problems
    problems += _relabel(cross_problems([case], images), label)
    uid = case["U_id"]
    if uid in {c["U_id"] for c in existing_cases}:
        problems.append(Problem(f"{label} case", uid, "U_id", "a case with this id is already in the source"))
    taken = {d["image"] for d in existing_images}
    for i, doc in enumerate(images):
        name = doc["image"]
        record = f"#{i} ({name})"
        if name in taken:
            problems.append(Problem(f"{label} images", record, "image",
                                    "an image with this id is already in the source"))
        elif (image_dir / f"{name}{IMAGE_SUFFIX}").exists():
            problems.append(Problem(f"{label} images", record, "image",
                                    f"{IMAGE_DIR}/{name}{IMAGE_SUFFIX} already exists in the source"))
        why = new_picture_problem(images_dir / f"{name}{IMAGE_SUFFIX}")
        if why:
            problems.append(Problem(f"{images_dir}/{name}{IMAGE_SUFFIX}", name, "", why))
    return problems


def _write_new(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.adding-{os.getpid()}")
    tmp.write_bytes(data)
    return tmp


def add_case(case_json: Path, images_dir: Path, source: Path) -> AddCaseSummary:
    """Add the case in ``case_json`` and its PNGs from ``images_dir`` to ``source``; on any error change nothing."""
    root = resolve_root(Path(source))
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"image folder not found: {images_dir}")
    existing = load_source(root, check_images=False)
    case, images = read_case_file(case_json)
    problems = _problems(case, images, Path(case_json).name, existing.cases, existing.images, images_dir,
                         existing.image_dir)
    if problems:
        raise ValidationError(problems, what="new case")
    names = [d["image"] for d in images]
    originals = {name: (root / name).read_bytes() for name in (CASES_FILE, IMAGES_FILE)}
    new_json = {CASES_FILE: json.dumps(existing.cases + [case], indent=4).encode("utf-8"),
                IMAGES_FILE: json.dumps(existing.images + images, indent=4).encode("utf-8")}
    temps: list[Path] = []
    placed: list[Path] = []
    replaced: list[str] = []
    try:
        existing.image_dir.mkdir(exist_ok=True)
        staged = []
        for name in names:
            final = existing.image_dir / f"{name}{IMAGE_SUFFIX}"
            tmp = final.with_name(f".{final.name}.adding-{os.getpid()}")
            temps.append(tmp)
            shutil.copyfile(images_dir / f"{name}{IMAGE_SUFFIX}", tmp)
            staged.append((tmp, final))
        json_temps = {label: _write_new(root / label, data) for label, data in new_json.items()}
        temps.extend(json_temps.values())
        for tmp, final in staged:
            move_into_place(tmp, final)
            placed.append(final)
        for label in (IMAGES_FILE, CASES_FILE):
            move_into_place(json_temps[label], root / label)
            replaced.append(label)
    except BaseException as exc:  # a failed write, or Ctrl-C between two renames: undo, never half a case
        for label in replaced:
            (root / label).write_bytes(originals[label])
        for path in temps + placed:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write to {root}: {exc.strerror or exc}; nothing was changed") from exc
        raise
    kinds = [d["Type"] for d in images]
    return AddCaseSummary(case["U_id"], tuple(names), kinds.count("CT"), kinds.count("MR"), root)
