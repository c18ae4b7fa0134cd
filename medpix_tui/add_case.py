"""Add a lab's own case to a source folder, checked exactly as ingest checks it, all or nothing.

The paper asks that hospitals can grow their copy of MedPix 2.0 in the same structure. A
new case arrives as one JSON file (its ``Case_topic.json`` document and its
``Descriptions.json`` documents) plus a folder of PNG files. :func:`add_case` runs the
ingest's own checks (:mod:`medpix_tui.source`) on it, refuses ids that already exist, and
decodes every image before touching the folder. Then it copies the images under temporary
names, writes both JSON files to temporary names, and renames everything into place; if
anything fails, what was written is removed and the original files are put back.

Two adds on one folder at once would each read the old JSON files and the later rename
would drop the other's case, so an add holds the folder's lock (:data:`LOCK_FILE`) from
reading the source to the last rename. Before its first rename it writes a journal
(:data:`JOURNAL_FILE`) naming the case and images, so that the next add undoes what a
killed one (SIGKILL, a power cut) left half done instead of refusing its images as taken.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import math
import os
import pwd
import re
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import pid_alive, remove_left_by_dead, rename_flushed, umask_mode
from .errors import InputError, Problem, ValidationError
from .progress import Progress, silent
from .source import (
    CASES_FILE,
    IMAGE_DIR,
    IMAGE_SUFFIX,
    IMAGES_FILE,
    LOCATION_CATEGORIES,
    MAX_JSON_BYTES,
    SourceData,
    case_problems,
    cross_problems,
    image_problems,
    is_plain_id,
    load_json,
    load_source,
    new_picture_problem,
    resolve_root,
)

#: Held (``flock``) by the add that is running on a source folder; removed when it ends.
LOCK_FILE = ".medpix-add.lock"
#: What an add is about to rename into place: a killed add leaves it for the next one to undo.
JOURNAL_FILE = ".medpix-add.journal"
#: Seconds an add waits for another add on the same folder before refusing.
LOCK_WAIT = 30.0
#: The temporaries of an add: ``.NAME.adding-PID``.
_TEMP = re.compile(r"\..+\.adding-(\d+)")

#: Tells the user something that is not an error (waiting for a lock, leftovers undone).
Notify = Callable[[str], None]


@dataclass(frozen=True)
class AddCaseSummary:
    """What was added, for the one line the command prints."""

    uid: str
    images: tuple[str, ...]
    ct: int
    mr: int
    source: Path


_STOPPING = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class _Stops:
    """The stop signals of one add. Ctrl-C, and SIGTERM and SIGHUP as the CLI turns them into an
    exception (``cli.app.Terminated``), roll the add back wherever they land. Once the case is in
    place, :meth:`added` ignores all three for a caller that ends right after (``ends_process``): a
    late one would make it exit as failed, with a traceback in an exit handler, although the case was added."""

    def __init__(self, ends_process: bool) -> None:
        self.ends_process = ends_process and threading.current_thread() is threading.main_thread()

    def added(self) -> None:
        """The case is in place (call it with the signals held): ignore them from now on if the
        caller ends; ignoring one also drops it if it is pending."""
        if self.ends_process:
            for signum in _STOPPING:
                signal.signal(signum, signal.SIG_IGN)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold back Ctrl-C, SIGTERM and SIGHUP while a rename and its record, or an undo, run: one
    between the two would leave a file in place that nobody knows of."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, ())  # the mask as it is, so the finally restores it
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


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
        if isinstance(case, dict) and "images" in case:  # it would be written into Case_topic.json
            raise InputError(f"{path}: 'images' goes next to 'case', not inside it")
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


def _record(doc: Any, index: int, key: str) -> str:
    """How the ingest's messages name a document: its index, and its id when that is plain."""
    ident = doc.get(key) if isinstance(doc, dict) else None
    return f"#{index} ({ident})" if is_plain_id(ident) else f"#{index}"


def non_finite_problems(doc: Any, file: str, record: str) -> list[Problem]:
    """NaN and Infinity anywhere in ``doc``: Python's JSON reader takes them, but written back they make
    the source (and every JSON output of it) invalid JSON."""
    problems: list[Problem] = []
    stack: list[tuple[str, Any]] = [("", doc)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            problems.append(Problem(file, record, where, f"{name} is not valid JSON: a number must be finite"))
        elif isinstance(value, dict):
            stack.extend(reversed([(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{where}.{i}", v) for i, v in enumerate(value)]))
    return problems


def _finer(problems: list[Problem], finer: list[Problem]) -> list[Problem]:
    """``problems``, where ``finer`` says better what is wrong at the same place ("NaN is not valid JSON"
    rather than "must be text, got float")."""
    at = {(p.file, p.record, p.field) for p in finer}
    return [p for p in problems if (p.file, p.record, p.field) not in at] + finer


def _title_problems(case: dict[str, Any], file: str) -> list[Problem]:
    """Every case of the release has a Case.Title and a Topic.Title; lists and the case view show them,
    so a null one would read "None"."""
    problems = []
    for part in ("Case", "Topic"):
        title = case[part].get("Title")
        if title is None or (isinstance(title, str) and not title.strip()):
            got = "null" if title is None and "Title" in case[part] else ("missing" if title is None else "blank")
            problems.append(Problem(file, _record(case, 0, "U_id"), f"{part}.Title",
                                    f"a title is required text, got {got}"))
    return problems


#: Why two ids may not differ only in letter case.
_CASE_FOLD_WHY = "their PNG files would be one file on a case-insensitive file system, as on macOS and Windows"


def _document_problems(case: Any, images: list[Any], label: str) -> list[Problem]:
    """What is wrong with the new documents alone: the ingest's checks, and what a new case must say."""
    problems = _finer(case_problems(case, 0, file=f"{label} case"),
                      non_finite_problems(case, f"{label} case", _record(case, 0, "U_id")))
    if not images:
        problems.append(Problem(f"{label} images", "", "images", "a case needs at least one image"))
    for i, doc in enumerate(images):
        problems += _finer(image_problems(doc, i, file=f"{label} images"),
                           non_finite_problems(doc, f"{label} images", _record(doc, i, "image")))
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
    problems += _title_problems(case, f"{label} case")
    problems += _relabel(cross_problems([case], images), label)
    folded: dict[str, str] = {}
    for i, doc in enumerate(images):
        name = doc["image"]
        if name == case["U_id"]:
            problems.append(_id_clash(label, i, name))
        other = folded.setdefault(name.casefold(), name)
        if other != name:  # the same id twice is named by the ingest's check
            problems.append(Problem(f"{label} images", f"#{i} ({name})", "image",
                                    f"differs from the image {other} of this case only in letter case "
                                    f"({_CASE_FOLD_WHY})"))
    return problems


def _id_clash(label: str, index: int, name: str) -> Problem:
    return Problem(f"{label} images", f"#{index} ({name})", "image",
                   "equals a case id, so `show` would never reach the image; choose another image id")


def _picture_problems(images: list[dict[str, Any]], images_dir: Path, progress: Progress) -> list[Problem]:
    """Decode every new picture (in threads: zlib releases the GIL): 300 large ones take half a minute."""
    paths = [images_dir / f"{doc['image']}{IMAGE_SUFFIX}" for doc in images]
    problems = []
    with progress("Checking images", len(paths)) as advance, ThreadPoolExecutor(4) as pool:
        for doc, path, why in zip(images, paths, pool.map(new_picture_problem, paths), strict=True):
            advance(1)
            if why:
                problems.append(Problem(f"{images_dir}/{path.name}", doc["image"], "", why))
    return problems


def _source_problems(case: dict[str, Any], images: list[dict[str, Any]], label: str,
                     existing: SourceData) -> list[Problem]:
    """The new ids against the source's: taken ones, files already there, an image named like a case."""
    problems = []
    uid = case["U_id"]
    case_ids = {c["U_id"] for c in existing.cases}
    taken = {d["image"] for d in existing.images}
    if uid in case_ids:
        problems.append(Problem(f"{label} case", uid, "U_id", "a case with this id is already in the source"))
    if uid in taken:
        problems.append(Problem(f"{label} case", uid, "U_id", "equals an image id in the source, so `show` "
                                "would never reach that image; choose another case id"))
    folded_cases = {c.casefold(): c for c in case_ids}
    folded_images = {n.casefold(): n for n in taken}
    if uid not in case_ids and (other := folded_cases.get(uid.casefold())):
        problems.append(Problem(f"{label} case", uid, "U_id", f"differs from the case {other} only in letter case "
                                f"({_CASE_FOLD_WHY}); choose another case id"))
    for i, doc in enumerate(images):
        name = doc["image"]
        record = f"#{i} ({name})"
        path = existing.image_dir / f"{name}{IMAGE_SUFFIX}"
        if name in taken:
            problems.append(Problem(f"{label} images", record, "image",
                                    "an image with this id is already in the source"))
        elif other := folded_images.get(name.casefold()):
            problems.append(Problem(f"{label} images", record, "image",
                                    f"differs from the image {other} only in letter case ({_CASE_FOLD_WHY})"))
        elif path.exists() or path.is_symlink():  # listed by no document: what an older, killed add left
            problems.append(Problem(f"{label} images", record, "image",
                                    f"{IMAGE_DIR}/{name}{IMAGE_SUFFIX} already exists in the source but no image "
                                    f"document lists it (left by an interrupted add-case?): if it is not yours, "
                                    f"remove {path} and run add-case again"))
        if name in case_ids:
            problems.append(_id_clash(label, i, name))
    return problems


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.adding-{os.getpid()}")


#: A temporary is made new, never opened through a symbolic link or into a file already there.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _create(tmp: Path) -> int:
    """``tmp``, made new and open for writing (mode 0666 less the umask, as ``open`` makes files)."""
    try:
        return os.open(tmp, _NEW_FILE, 0o666)
    except FileExistsError:  # a killed add whose pid came round again left it, or somebody put a link there
        tmp.unlink()  # the name itself, never what a link there points to
        return os.open(tmp, _NEW_FILE, 0o666)


def _write_new(path: Path, data: bytes) -> Path:
    """``data`` in a new temporary beside ``path``, flushed to disk, to be renamed over ``path``."""
    tmp = _temp_name(path)
    with open(_create(tmp), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def _copy_new(src: Path, tmp: Path) -> None:
    """Copy ``src`` to the new temporary ``tmp`` (see :func:`_create`), flushed to disk."""
    with open(src, "rb") as inp, open(_create(tmp), "wb") as out:
        shutil.copyfileobj(inp, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


def _place(tmp: Path, path: Path, then: Callable[[], None]) -> None:
    """Rename ``tmp`` over ``path`` and run ``then`` (which records it) with the stop signals held:
    one between the two would leave a file in place that the undo does not know of."""
    with _signals_held():
        rename_flushed(tmp, path)
        then()


def _replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` by a rename, so a reader (or a kill) never meets half of it."""
    tmp = _temp_name(path)
    try:
        _write_new(path, data)
        rename_flushed(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _holder(fd: int) -> str:
    """`` (pid N)`` of the add holding the lock, as it wrote it in the lock file; empty when unknown
    (or when that process is gone: another user's add holds a lock file it could not write)."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(fd, 32, 0).decode().strip())
        if pid_alive(pid):
            return f" (pid {pid})"
    return ""


def _owner(st: os.stat_result) -> str:
    try:
        return f"user {pwd.getpwuid(st.st_uid).pw_name}"
    except (KeyError, OSError):
        return f"user id {st.st_uid}"


def _not_a_lock(path: Path, what: str) -> InputError:
    return InputError(f"refusing to use {path}: it is {what}, so not the lock file add-case makes; remove it and "
                      "run add-case again")


def _check_lock(path: Path, st: os.stat_result) -> None:
    """Refuse a lock file that is a symbolic link (its target would be written) or no regular file."""
    if stat.S_ISLNK(st.st_mode):
        raise _not_a_lock(path, "a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise _not_a_lock(path, "not a regular file (a folder, FIFO, socket or device)")


def _open_lock(path: Path, root: Path) -> tuple[int, bool] | None:
    """The lock file open (made if missing), and whether it could be opened for writing; None when it
    went meanwhile (its holder finished). Another user's lock file is locked read-only (``flock``
    needs no more), so that a group's shared source is not refused to all but the one who made it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        pass
    else:
        with contextlib.suppress(OSError):  # readable by all who may write the folder, so they can lock it
            os.fchmod(fd, 0o444 | umask_mode(0o666))
        return fd, True
    try:
        _check_lock(path, path.lstat())
    except FileNotFoundError:
        return None
    flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # O_NONBLOCK: a FIFO put there would block the open
    writable = True
    try:
        try:
            fd = os.open(path, os.O_RDWR | flags)
        except PermissionError:
            writable = False
            fd = os.open(path, os.O_RDONLY | flags)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        try:
            owner = f" (it belongs to {_owner(path.lstat())}, who alone may read it)"
        except OSError:
            owner = ""
        raise InputError(f"cannot open the lock file {path}: {exc.strerror}{owner}; if no add-case is running "
                         f"on {root}, remove it and run add-case again") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # made a link since the lstat
            raise _not_a_lock(path, "a symbolic link") from None
        raise
    try:
        _check_lock(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd, writable


@contextlib.contextmanager
def source_lock(root: Path, wait: float = LOCK_WAIT, notify: Notify | None = None) -> Iterator[bool]:
    """Hold ``root``'s add lock (yields False where the file system has no locks); wait up to ``wait``
    seconds for another add, saying so once, then refuse in one line.

    The lock file is removed while held, so a waiter that opened the old one locks it again.
    """
    path = Path(root) / LOCK_FILE
    deadline = time.monotonic() + wait
    told = False
    writable = False
    while True:
        opened = _open_lock(path, root)
        if opened is None:
            continue
        fd, writable = opened
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise InputError(f"another add-case{holder} is still running on {root} after {wait:g} s; "
                                 "run this one again when it has finished") from None
            if not told and notify is not None:
                notify(f"waiting for another add-case{holder} on {root} to finish...")
                told = True
            time.sleep(0.05)
            continue
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            with contextlib.suppress(OSError):
                path.unlink()
            fd = -1  # no locks here: the check that the JSON files did not change still guards
            break
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # its holder removed it as it finished: lock the file there now
    if fd < 0:
        yield False
        return
    try:
        if writable:  # else it is another user's, and names a process that is gone
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield True
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def _is_temp(name: str) -> bool:
    return _TEMP.fullmatch(name) is not None


def _temp_pid(name: str) -> int | None:
    found = _TEMP.fullmatch(name)
    return int(found[1]) if found else None


def recover(root: Path, locked: bool = True) -> str | None:
    """Undo what a killed add left in ``root`` (call it holding the lock); say what was undone, if anything.

    Temporaries (``.NAME.adding-PID``) go when PID no longer runs. A journal means the add died
    between its renames: unless its case reached ``Case_topic.json`` (the last rename), its image
    documents leave ``Descriptions.json`` and the images it placed, which no document lists, go.
    """
    root = Path(root)
    swept = remove_left_by_dead(root, _is_temp, _temp_pid) + remove_left_by_dead(root / IMAGE_DIR, _is_temp,
                                                                                  _temp_pid)
    journal = root / JOURNAL_FILE
    if not os.path.lexists(journal):
        return f"removed {len(swept)} temporary file(s) an interrupted add-case left in {root}" if swept else None
    if journal.is_symlink():  # what it names is deleted: never read one somebody pointed elsewhere
        raise InputError(f"{journal}: a symbolic link, not the record of an interrupted add-case; remove it, and "
                         f"any images in {root / IMAGE_DIR} that no document lists")
    data, why = load_json(journal)
    names = data.get("images") if isinstance(data, dict) else None
    if why or not (isinstance(names, list) and all(is_plain_id(n) for n in names) and is_plain_id(data.get("case"))
                   and isinstance(data.get("pid"), int)):
        raise InputError(f"{journal}: cannot read the record of an interrupted add-case ({why or 'not a record'}); "
                         f"remove it, and any images in {root / IMAGE_DIR} that no document lists")
    uid, pid = data["case"], data["pid"]
    if not locked and pid != os.getpid() and pid_alive(pid):
        raise InputError(f"an add-case (pid {pid}) is still adding {uid} to {root}; run this one again when it "
                         "has finished")
    cases, _ = load_json(root / CASES_FILE)
    docs, _ = load_json(root / IMAGES_FILE)
    if not isinstance(cases, list) or not isinstance(docs, list):
        return None  # load_source names what is wrong with them; the journal waits for a readable source
    with _signals_held():  # stopped half way, the journal stays and the next add goes on
        if any(isinstance(c, dict) and c.get("U_id") == uid for c in cases):
            journal.unlink()  # it finished all but this
            return None
        kept = [d for d in docs if not (isinstance(d, dict) and d.get("U_id") == uid and d.get("image") in names)]
        if len(kept) != len(docs):
            _replace_file(root / IMAGES_FILE, json.dumps(kept, indent=4).encode("utf-8"))
        listed = {d.get("image") for d in kept if isinstance(d, dict)}
        for name in names:
            if name not in listed:
                with contextlib.suppress(FileNotFoundError):
                    (root / IMAGE_DIR / f"{name}{IMAGE_SUFFIX}").unlink()
        journal.unlink()
    return f"undid an interrupted add-case of {uid} (pid {pid}) in {root}"


def _finite_json(docs: list[Any], label: str) -> bytes:
    """``docs`` as the source's JSON; a source that already holds NaN (an older add wrote it) is named,
    not copied on."""
    try:
        return json.dumps(docs, indent=4, allow_nan=False).encode("utf-8")
    except ValueError:
        problems = [p for i, d in enumerate(docs)
                    for p in non_finite_problems(d, label, _record(d, i, "U_id" if label == CASES_FILE else "image"))]
        raise ValidationError(problems) from None


def add_case(case_json: Path, images_dir: Path, source: Path, *, progress: Progress = silent,
             notify: Notify | None = None, lock_wait: float = LOCK_WAIT, ends_process: bool = False) -> AddCaseSummary:
    """Add the case in ``case_json`` and its PNGs from ``images_dir`` to ``source``; on any error change nothing.

    ``progress`` shows the checking and the copying of the images; ``notify`` hears of a wait for
    another add on ``source`` and of leftovers of a killed one that were undone. A caller that
    exits right after (the command) passes ``ends_process``: once the case is in place, Ctrl-C,
    SIGTERM and SIGHUP are ignored, so that a late one does not make it exit as failed.
    """
    stops = _Stops(ends_process)
    root = resolve_root(Path(source))
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"image folder not found: {images_dir}")
    label = Path(case_json).name
    case, images = read_case_file(case_json)
    problems = _document_problems(case, images, label)
    if problems:
        raise ValidationError(problems, what="new case")
    pictures = _picture_problems(images, images_dir, progress)  # the slow part, before the lock
    try:
        with source_lock(root, lock_wait, notify) as locked:
            note = recover(root, locked)
            if note and notify is not None:
                notify(f"note: {note}")
            return _add_locked(root, case, images, label, pictures, images_dir, progress, stops)
    except OSError as exc:
        raise InputError(f"cannot write to {root}: {exc.strerror or exc}; nothing was changed") from None


def _too_large(root: Path, new_json: dict[str, bytes]) -> None:
    """Refuse a JSON file that would outgrow what the ingest reads: every later add and build would refuse it."""
    for name, data in new_json.items():
        if len(data) > MAX_JSON_BYTES:
            raise InputError(f"{root / name} would grow to {len(data)} bytes with this case, over the limit of "
                             f"{MAX_JSON_BYTES} bytes that add-case and bundle build read; nothing was changed")


def _add_locked(root: Path, case: dict[str, Any], images: list[dict[str, Any]], label: str,
                pictures: list[Problem], images_dir: Path, progress: Progress, stops: _Stops) -> AddCaseSummary:
    """Read the source, check the new ids against it and write, all under the lock."""
    existing = load_source(root, check_images=False)
    problems = _source_problems(case, images, label, existing) + pictures
    if problems:
        raise ValidationError(problems, what="new case")
    names = [d["image"] for d in images]
    originals = {name: (root / name).read_bytes() for name in (CASES_FILE, IMAGES_FILE)}
    new_json = {CASES_FILE: _finite_json(existing.cases + [case], CASES_FILE),
                IMAGES_FILE: _finite_json(existing.images + images, IMAGES_FILE)}
    _too_large(root, new_json)
    temps: list[Path] = []  # _undo ignores unlink errors: on a read-only disk even a file never made raises
    placed: list[Path] = []
    replaced: list[str] = []
    journal = root / JOURNAL_FILE
    journaled: list[Path] = []

    def finished() -> None:  # Case_topic.json is in place: the add is done, too late for a signal to undo it
        replaced.append(CASES_FILE)
        stops.added()
        with contextlib.suppress(OSError):  # left, it only tells the next add that this one finished
            journal.unlink()

    try:
        existing.image_dir.mkdir(exist_ok=True)
        staged = []
        with progress("Copying images", len(names)) as advance:
            for name in names:
                final = existing.image_dir / f"{name}{IMAGE_SUFFIX}"
                tmp = _temp_name(final)
                temps.append(tmp)  # before the copy: a Ctrl-C inside it leaves part of one
                _copy_new(images_dir / f"{name}{IMAGE_SUFFIX}", tmp)
                staged.append((tmp, final))
                advance(1)
        json_temps = {}
        for name, data in new_json.items():
            temps.append(_temp_name(root / name))
            json_temps[name] = _write_new(root / name, data)
        for name in (CASES_FILE, IMAGES_FILE):  # another program wrote them since they were read: keep its
            if _digest(root / name) != existing.digests[name]:
                raise _Changed(root / name)
        temps.append(_temp_name(journal))
        record = json.dumps({"pid": os.getpid(), "case": case["U_id"], "images": names}).encode()
        _place(_write_new(journal, record), journal, lambda: journaled.append(journal))
        for tmp, final in staged:
            _place(tmp, final, functools.partial(placed.append, final))
        _place(json_temps[IMAGES_FILE], root / IMAGES_FILE, lambda: replaced.append(IMAGES_FILE))
        _place(json_temps[CASES_FILE], root / CASES_FILE, finished)  # last: the journal's sign that the add finished
    except BaseException as exc:  # a failed write, Ctrl-C or a hang-up between two renames: never half a case
        if CASES_FILE in replaced:  # the stop signal came as the last rename was made: the case is added
            if not isinstance(exc, KeyboardInterrupt):
                raise
        else:
            _undo(root, originals, replaced, temps, placed, journal if journaled else None)
            if isinstance(exc, _Changed):
                raise InputError(f"{exc.path} changed while the case was being added (another program wrote it); "
                                 "nothing was changed: run add-case again") from None
            raise
    kinds = [d["Type"] for d in images]
    return AddCaseSummary(case["U_id"], tuple(names), kinds.count("CT"), kinds.count("MR"), root)


class _Changed(Exception):
    """A JSON file of the source changed between its reading and the renames."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path))
        self.path = path


def _undo(root: Path, originals: dict[str, bytes], replaced: list[str], temps: list[Path], placed: list[Path],
          journal: Path | None) -> None:
    """Put the JSON files back and remove what this add created, the journal last and only once all it
    names is undone: should this fail too, or the process be killed, the next add finds the journal and
    finishes the undo (temporaries it sweeps by their dead pid)."""
    with _signals_held():
        for name in (CASES_FILE, IMAGES_FILE):  # Case_topic.json first, as the journal's reader expects
            if name not in replaced:
                continue
            try:
                _replace_file(root / name, originals[name])
            except OSError as exc:
                then = ("so the case stays added" if name == CASES_FILE else
                        "and the next add-case on this folder undoes the rest")
                raise InputError(f"cannot write to {root}: {exc.strerror or exc}; undoing the add failed too, "
                                 f"{then}") from None
        for path in temps:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        failed = None
        for path in placed:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                failed = failed or exc
        if failed is not None:
            raise InputError(f"cannot write to {root}: {failed.strerror or failed}; undoing the add failed too, "
                             "and the next add-case on this folder undoes the rest") from None
        if journal is not None:
            with contextlib.suppress(OSError):
                journal.unlink()
