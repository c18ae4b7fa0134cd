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
import struct
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import InputError, Problem, ValidationError
from .progress import Progress, silent
from .vocabulary import age_problem

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
#: Largest JSON file read (the release's largest is 3.1 MB); the size is checked before reading.
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Largest image file and pixel count accepted (the release's largest is ~0.5 megapixels),
#: checked from the PNG header before any decoding.
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 16_000_000
#: The smallest side, in pixels, that can hold a slice worth classifying or keeping.
MIN_SIDE = 8


def is_blank(im: Image.Image) -> bool:
    """Whether a decoded image is one colour throughout (each band holds a single value)."""
    bands = im.getextrema()
    return all(low == high for low, high in (bands if isinstance(bands[0], tuple) else (bands,)))
#: Problems collected before validation stops (a hostile file can hold millions).
MAX_PROBLEMS = 1000
#: Nesting of values inside one document, beyond which it is refused (the release's is 2).
MAX_DOC_DEPTH = 32
_PLAIN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_INT64 = (-(2**63), 2**63 - 1)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
Image.MAX_IMAGE_PIXELS = 64_000_000
# Pillow only warns between MAX_IMAGE_PIXELS and twice that; a bomb is an error wherever
# the library reads an image.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def is_plain_id(name: object) -> bool:
    """True for ids safe to use as file names: printable letters, digits, ``_.-``; no ``..``, no leading dot,
    no whitespace or control character anywhere (a trailing newline included)."""
    return isinstance(name, str) and _PLAIN_ID.fullmatch(name) is not None and ".." not in name


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


def load_json(path: Path) -> tuple[Any, str | None]:
    """The JSON value in ``path``, or None and why it cannot be used: one reader for ingest and add-case.

    The size is checked before reading, so a 2 GB file is refused without being read.
    """
    path = Path(path)
    try:
        if not path.exists():
            return None, "file is missing"
        if not path.is_file():
            return None, "not a regular file"
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            return None, f"file too large ({size} bytes, limit {MAX_JSON_BYTES})"
        with open(path, "rb") as f:
            data = f.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            return None, f"file too large (over {MAX_JSON_BYTES} bytes)"
        return json.loads(data.decode("utf-8")), None
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start})"
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
    except RecursionError:
        return None, "invalid JSON: nested too deeply"
    except ValueError as exc:  # an integer of more than 4300 digits
        return None, f"invalid JSON: {str(exc)[:80]}"
    except MemoryError:
        return None, "invalid JSON: too large to read"
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"


def _read_json(path: Path, label: str, problems: list[Problem]) -> Any:
    data, why = load_json(path)
    if why:
        problems.append(Problem(label, "", "", why))
    return data


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def value_problems(doc: dict[str, Any], file: str, record: str) -> list[Problem]:
    """What the store cannot hold, anywhere in ``doc``: a key that is empty, starts with ``$`` or holds
    NUL, text that is not Unicode (a lone surrogate from a ``\\ud800`` escape), an integer beyond
    64 bits, nesting deeper than :data:`MAX_DOC_DEPTH`."""
    problems: list[Problem] = []
    stack: list[tuple[str, Any, int]] = [("", doc, 0)]
    while stack and len(problems) < 20:
        where, value, depth = stack.pop()
        if depth > MAX_DOC_DEPTH:
            problems.append(Problem(file, record, where, f"nested deeper than {MAX_DOC_DEPTH} levels"))
        elif isinstance(value, dict):
            for key, val in value.items():
                name = f"{where}.{key}" if where else str(key)
                if not isinstance(key, str) or not key or key.startswith("$") or "\x00" in key or not _utf8(key):
                    problems.append(Problem(file, record, repr(name)[1:-1][:60],
                                            "invalid key: keys may not be empty, start with '$' or hold NUL"))
                else:
                    stack.append((name, val, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{where}.{i}", v, depth + 1) for i, v in enumerate(value))
        elif isinstance(value, str) and not _utf8(value):
            problems.append(Problem(file, record, where,
                                    "text holds a lone surrogate (\\ud800-\\udfff), not valid Unicode"))
        elif isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
            problems.append(Problem(file, record, where,
                                    f"integer out of range ({str(value)[:30]}; 64-bit integers only)"))
    return problems


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


def _document_problems(doc: dict[str, Any], index: int, file: str, id_key: str,
                       keys: tuple[str, ...]) -> tuple[str, list[Problem]]:
    """How messages name the document (its index, and its ``id_key`` when that is a plain id),
    and the problems any document can have: a key of ``keys`` missing, a value of a bad kind."""
    record = f"#{index} ({doc[id_key]})" if is_plain_id(doc.get(id_key)) else f"#{index}"
    problems = [Problem(file, record, key, "missing") for key in keys if key not in doc]
    return record, problems + value_problems(doc, file, record)


def case_problems(doc: Any, index: int, file: str = CASES_FILE) -> list[Problem]:
    """Schema problems of one case document (no cross-document checks)."""
    if not isinstance(doc, dict):
        return [Problem(file, f"#{index}", "", f"must be an object, got {type(doc).__name__}")]
    record, problems = _document_problems(doc, index, file, "U_id", CASE_KEYS)
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
    record, problems = _document_problems(doc, index, file, "image", IMAGE_KEYS)
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
        age = doc["Description"].get("Age") if isinstance(doc["Description"], dict) else None
        if isinstance(age, str) and (why := age_problem(age)):  # not text: _check_text_map named it
            problems.append(Problem(file, record, "Description.Age", why))
    return problems


#: Called with each decoded image during validation, so a caller that needs the pixels
#: (the bundle's embeddings) does not decode every file a second time.
KeepImage = Callable[[str, Image.Image], None]


def png_problem(path: Path) -> str | None:
    """Why ``path`` is not a plain PNG of bounded size, from its chunk headers alone (nothing is decoded).

    Refuses other formats, more than :data:`MAX_PIXELS` pixels, truncated chunks and any
    data after the IEND chunk (a PNG followed by 2 GB of zeros).
    """
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        return f"image file too large ({size} bytes, limit {MAX_IMAGE_BYTES})"
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return "image file does not decode (not a PNG file)"
        first = True
        while True:
            header = f.read(8)
            if len(header) < 8:
                return "image file does not decode (truncated PNG: no IEND chunk)"
            length, kind = struct.unpack(">I4s", header)
            if first:
                if kind != b"IHDR" or length < 8:
                    return "image file does not decode (PNG without a header chunk)"
                width, height = struct.unpack(">II", f.read(8))
                if width * height > MAX_PIXELS:
                    return f"image too large ({width} x {height} pixels, limit {MAX_PIXELS})"
                f.seek(length - 8, 1)
                first = False
            else:
                f.seek(length, 1)
            f.seek(4, 1)  # the CRC
            if f.tell() > size:
                return "image file does not decode (truncated PNG chunk)"
            if kind == b"IEND":
                extra = size - f.tell()
                return f"data after the PNG's end (IEND): {extra} bytes" if extra else None


def decode_problem(path: Path, keep: Callable[[Image.Image], None] | None = None) -> str | None:
    """Why the image file at ``path`` cannot be used, or None when it decodes (and ``keep`` took it)."""
    try:
        if not path.is_file():
            return "image file is missing"
        if path.stat().st_size == 0:
            return "image file is empty"
        why = png_problem(path)
        if why:
            return why
        with Image.open(path) as im:
            im.load()
            if keep is not None:
                keep(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"image too large (limit {MAX_PIXELS} pixels)"
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files
        return f"image file does not decode ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def new_picture_problem(path: Path) -> str | None:
    """:func:`decode_problem`, and for a picture a lab adds: too small to show a slice, or blank
    (one colour throughout, as a failed screenshot or an empty export is)."""
    why = decode_problem(path)
    if why:
        return why
    with Image.open(path) as im:
        im.load()
        if min(im.size) < MIN_SIDE:
            return f"image of {im.width}x{im.height} pixels is too small (at least {MIN_SIDE}x{MIN_SIDE})"
        if is_blank(im):
            return "image is blank (one colour throughout)"
    return None


def _index_by(docs: list[dict[str, Any]], key: str, file: str, why: str,
              problems: list[Problem]) -> dict[str, dict[str, Any]]:
    """The documents by their text ``key`` (the last one wins), noting ``why`` for every repeated value."""
    by_key: dict[str, dict[str, Any]] = {}
    for i, doc in enumerate(docs):
        value = doc.get(key)
        if isinstance(value, str):
            if value in by_key:
                problems.append(Problem(file, f"#{i} ({value})", key, why))
            by_key[value] = doc
    return by_key


def cross_problems(cases: list[dict[str, Any]], images: list[dict[str, Any]]) -> list[Problem]:
    """Joins and uniqueness: every image's case exists, every listed name has a document."""
    problems: list[Problem] = []
    case_by_id = _index_by(cases, "U_id", CASES_FILE, "duplicated case id", problems)
    image_by_name = _index_by(images, "image", IMAGES_FILE, "duplicated image id", problems)
    for i, img in enumerate(images):
        name = img.get("image")
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
            if splits.get(uid, split) != split:
                problems.append(Problem(SPLIT_FILE, uid[:60], split, f"case is also listed under {splits[uid]}: "
                                        "a case belongs to one split"))
                continue
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
    for docs, check in ((cases, case_problems), (images, image_problems)):
        for i, doc in enumerate(docs):
            problems.extend(check(doc, i))
            if len(problems) >= MAX_PROBLEMS:  # the rest is not even looked at
                raise ValidationError(problems[:MAX_PROBLEMS])
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
