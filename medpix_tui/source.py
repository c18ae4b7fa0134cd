"""Read and validate a MedPix 2.0 source folder before anything is written.

A source folder has the layout of the public release: ``Case_topic.json``,
``Descriptions.json``, ``images/<name>.png`` and optionally
``splitted_dataset/uid_list.json``. :func:`load_source` checks everything the ingest
promises (schema, ids, joins, decodable images) and reports every problem at once in a
single :class:`~medpix_tui.errors.ValidationError`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import InputError, Problem, ValidationError
from .progress import Progress, silent

CASES_FILE = "Case_topic.json"
IMAGES_FILE = "Descriptions.json"
IMAGE_DIR = "images"
SPLIT_FILE = "splitted_dataset/uid_list.json"
IMAGE_SUFFIX = ".png"
SPLITS = ("train", "dev", "test")
MODALITIES = ("CT", "MR")
#: The five values of ``Location Category`` in the release, in the paper's order.
LOCATION_CATEGORIES = ("Head", "Thorax", "Abdomen", "Spine and Muscles", "Reproductive and Urinary System")

CASE_KEYS = ("U_id", "TAC", "MRI", "Case", "Topic")
IMAGE_KEYS = ("Type", "U_id", "image", "Description", "Location", "Location Category")
#: Longest text accepted in any single field (the longest in the release is ~60 kB).
MAX_TEXT = 1_000_000
_PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
Image.MAX_IMAGE_PIXELS = 64_000_000


def is_plain_id(name: object) -> bool:
    """True for ids safe to use as file names: no separators, no ``..``, no leading dot."""
    return isinstance(name, str) and bool(_PLAIN_ID.match(name)) and ".." not in name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class SourceData:
    """A validated source: the release's documents, in file order, and where images live."""

    root: Path
    cases: list[dict[str, Any]]
    images: list[dict[str, Any]]
    splits: dict[str, str | None]
    image_dir: Path
    digests: dict[str, str] = field(default_factory=dict)

    def image_path(self, name: str) -> Path:
        """Path of the PNG file of image ``name``."""
        return self.image_dir / f"{name}{IMAGE_SUFFIX}"

    def split_counts(self) -> dict[str, int]:
        """Number of images in each split."""
        counts: dict[str, int] = {}
        for doc in self.images:
            key = self.splits.get(doc["U_id"]) or "none"
            counts[key] = counts.get(key, 0) + 1
        return counts


def _read_json(path: Path, label: str, problems: list[Problem]) -> Any:
    if not path.is_file():
        problems.append(Problem(label, "", "", "file is missing"))
        return None
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        problems.append(Problem(label, "", "", f"not UTF-8 text (byte {exc.start})"))
    except json.JSONDecodeError as exc:
        problems.append(Problem(label, "", "", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"))
    except RecursionError:
        problems.append(Problem(label, "", "", "invalid JSON: nested too deeply"))
    except OSError as exc:
        problems.append(Problem(label, "", "", f"cannot read: {exc.strerror}"))
    return None


def _check_text_map(value: Any, file: str, record: str, name: str, problems: list[Problem]) -> None:
    """A Case, Topic or Description: an object of text (or null) values of bounded size."""
    if not isinstance(value, dict):
        problems.append(Problem(file, record, name, f"must be an object, got {type(value).__name__}"))
        return
    for key, val in value.items():
        if val is not None and not isinstance(val, str):
            problems.append(Problem(file, record, f"{name}.{key}", f"must be text or null, got {type(val).__name__}"))
        elif isinstance(val, str) and len(val) > MAX_TEXT:
            problems.append(Problem(file, record, f"{name}.{key}",
                                    f"text too long ({len(val)} characters, limit {MAX_TEXT})"))


def case_problems(doc: Any, index: int, file: str = CASES_FILE) -> list[Problem]:
    """Schema problems of one case document (no cross-document checks)."""
    if not isinstance(doc, dict):
        return [Problem(file, f"#{index}", "", f"must be an object, got {type(doc).__name__}")]
    record = f"#{index} ({doc['U_id']})" if isinstance(doc.get("U_id"), str) else f"#{index}"
    problems = [Problem(file, record, key, "missing") for key in CASE_KEYS if key not in doc]
    if "U_id" in doc and not is_plain_id(doc["U_id"]):
        problems.append(Problem(file, record, "U_id", f"not a plain id: {str(doc['U_id'])[:60]!r}"))
    for key in ("TAC", "MRI"):
        names = doc.get(key, [])
        if not isinstance(names, list):
            problems.append(Problem(file, record, key, f"must be a list, got {type(names).__name__}"))
            continue
        for name in names:
            if not is_plain_id(name):
                problems.append(Problem(file, record, key, f"not a plain image id: {str(name)[:60]!r}"))
    for key in ("Case", "Topic"):
        if key in doc:
            _check_text_map(doc[key], file, record, key, problems)
    return problems


def image_problems(doc: Any, index: int, file: str = IMAGES_FILE) -> list[Problem]:
    """Schema problems of one image document (no cross-document checks)."""
    if not isinstance(doc, dict):
        return [Problem(file, f"#{index}", "", f"must be an object, got {type(doc).__name__}")]
    record = f"#{index} ({doc['image']})" if isinstance(doc.get("image"), str) else f"#{index}"
    problems = [Problem(file, record, key, "missing") for key in IMAGE_KEYS if key not in doc]
    if "Type" in doc and doc["Type"] not in MODALITIES:
        problems.append(Problem(file, record, "Type", f"must be CT or MR, got {str(doc['Type'])[:40]!r}"))
    for key in ("U_id", "image"):
        if key in doc and not is_plain_id(doc[key]):
            problems.append(Problem(file, record, key, f"not a plain id: {str(doc[key])[:60]!r}"))
    for key in ("Location", "Location Category"):
        if key in doc and not isinstance(doc[key], str):
            problems.append(Problem(file, record, key, f"must be text, got {type(doc[key]).__name__}"))
    if "Description" in doc:
        _check_text_map(doc["Description"], file, record, "Description", problems)
    return problems


#: Called with each decoded image during validation, so a caller that needs the pixels
#: (the bundle's embeddings) does not decode every file a second time.
KeepImage = Callable[[str, Image.Image], None]


def decode_problem(path: Path, keep: Callable[[Image.Image], None] | None = None) -> str | None:
    """Why the image file at ``path`` cannot be used, or None when it decodes (and ``keep`` took it)."""
    try:
        if not path.is_file():
            return "image file is missing"
        if path.stat().st_size == 0:
            return "image file is empty"
        with Image.open(path) as im:
            im.load()
            if keep is not None:
                keep(im)
    except Exception as exc:  # PIL raises many types for damaged files
        return f"image file does not decode ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def cross_problems(cases: list[dict[str, Any]], images: list[dict[str, Any]]) -> list[Problem]:
    """Joins and uniqueness: every image's case exists, every listed name has a document."""
    problems: list[Problem] = []
    case_by_id: dict[str, dict[str, Any]] = {}
    for i, case in enumerate(cases):
        uid = case.get("U_id")
        if isinstance(uid, str):
            if uid in case_by_id:
                problems.append(Problem(CASES_FILE, f"#{i} ({uid})", "U_id", "duplicated case id"))
            case_by_id[uid] = case
    image_by_name: dict[str, dict[str, Any]] = {}
    for i, img in enumerate(images):
        name = img.get("image")
        if isinstance(name, str):
            if name in image_by_name:
                problems.append(Problem(IMAGES_FILE, f"#{i} ({name})", "image", "duplicated image id"))
            image_by_name[name] = img
        uid = img.get("U_id")
        if isinstance(uid, str) and uid not in case_by_id:
            problems.append(Problem(IMAGES_FILE, f"#{i} ({name})", "U_id", f"no case with U_id {uid!r}"))
    listed: set[str] = set()
    for i, case in enumerate(cases):
        for key, modality in (("TAC", "CT"), ("MRI", "MR")):
            names = case.get(key)
            if not isinstance(names, list):
                continue
            for name in names:
                if not isinstance(name, str):
                    continue
                listed.add(name)
                named = image_by_name.get(name)
                record = f"#{i} ({case.get('U_id')})"
                if named is None:
                    problems.append(Problem(CASES_FILE, record, key, f"image {name!r} has no image document"))
                elif named.get("U_id") != case.get("U_id"):
                    problems.append(Problem(CASES_FILE, record, key,
                                            f"image {name!r} belongs to case {named.get('U_id')!r}"))
                elif named.get("Type") != modality:
                    problems.append(Problem(CASES_FILE, record, key,
                                            f"image {name!r} is {named.get('Type')}, listed under {key}"))
    for i, img in enumerate(images):
        name = img.get("image")
        if isinstance(name, str) and name not in listed and img.get("U_id") in case_by_id:
            problems.append(Problem(IMAGES_FILE, f"#{i} ({name})", "image", "not listed in its case's TAC or MRI"))
    return problems


def image_file_problems(names: list[str], image_dir: Path, progress: Progress = silent, workers: int = 4,
                        keep: KeepImage | None = None) -> list[Problem]:
    """Decode every image file (in threads: zlib releases the GIL), handing each to ``keep``."""

    def check(name: str) -> str | None:
        return decode_problem(image_dir / f"{name}{IMAGE_SUFFIX}", None if keep is None else partial(keep, name))

    problems: list[Problem] = []
    with progress("Checking images", len(names)) as advance, ThreadPoolExecutor(workers) as pool:
        for name, why in zip(names, pool.map(check, names), strict=True):
            advance(1)
            if why:
                problems.append(Problem(f"{IMAGE_DIR}/{name}{IMAGE_SUFFIX}", name, "", why))
    return problems


def _read_splits(root: Path, problems: list[Problem]) -> dict[str, str | None]:
    path = root / SPLIT_FILE
    if not path.exists():
        return {}
    data = _read_json(path, SPLIT_FILE, problems)
    splits: dict[str, str | None] = {}
    if data is None and any(p.file == SPLIT_FILE for p in problems):
        return splits
    if not isinstance(data, dict):
        problems.append(Problem(SPLIT_FILE, "", "", "must be an object of split name -> list of U_id"))
        return splits
    for split in SPLITS:
        uids = data.get(split, [])
        if not isinstance(uids, list) or not all(isinstance(u, str) for u in uids):
            problems.append(Problem(SPLIT_FILE, "", split, "must be a list of U_id"))
            continue
        for uid in uids:
            splits[uid] = split
    return splits


def resolve_root(path: Path) -> Path:
    """Accept the release folder itself or a parent holding ``MedPix-2-0``."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"source folder not found: {path}")
    if not (path / CASES_FILE).exists() and (path / "MedPix-2-0" / CASES_FILE).exists():
        return path / "MedPix-2-0"
    return path


def load_source(path: Path, *, check_images: bool = True, progress: Progress = silent,
                keep: KeepImage | None = None) -> SourceData:
    """Read and validate a source folder; raise :class:`ValidationError` listing every problem.

    With ``check_images``, every image is decoded and handed, with its name, to ``keep``.
    """
    root = resolve_root(path)
    problems: list[Problem] = []
    cases = _read_json(root / CASES_FILE, CASES_FILE, problems)
    images = _read_json(root / IMAGES_FILE, IMAGES_FILE, problems)
    splits = _read_splits(root, problems)
    for data, label in ((cases, CASES_FILE), (images, IMAGES_FILE)):
        if not isinstance(data, list) and not any(p.file == label for p in problems):  # JSON null too
            got = "null" if data is None else type(data).__name__
            problems.append(Problem(label, "", "", f"must be a JSON array, got {got}"))
    if problems:
        raise ValidationError(problems)
    for i, doc in enumerate(cases):
        problems.extend(case_problems(doc, i))
    for i, doc in enumerate(images):
        problems.extend(image_problems(doc, i))
    if problems:
        raise ValidationError(problems)
    problems.extend(cross_problems(cases, images))
    image_dir = root / IMAGE_DIR
    if check_images:
        if not image_dir.is_dir():
            problems.append(Problem(IMAGE_DIR, "", "", "image folder is missing"))
        else:
            problems.extend(image_file_problems([d["image"] for d in images], image_dir, progress, keep=keep))
    if problems:
        raise ValidationError(problems)
    digests = {label: sha256_file(root / label) for label in (CASES_FILE, IMAGES_FILE, SPLIT_FILE)
               if (root / label).exists()}
    return SourceData(root=root, cases=cases, images=images,
                      splits={c["U_id"]: splits.get(c["U_id"]) for c in cases},
                      image_dir=image_dir, digests=digests)
