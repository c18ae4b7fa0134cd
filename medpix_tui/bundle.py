"""The offline bundle: one folder (or one archive) holding everything the app needs.

Layout::

    manifest.json      format marker and version, source digests, counts, model, sha256 of every file
    store/             mongita database (Image_Descriptions, Clinical_Reports, Image_Reports, Splits)
    images/            the PNGs
    parquet/           images.parquet, cases.parquet, image_reports.parquet
    search.sqlite      keyword index (SQLite FTS5)
    model/             the CLIP checkpoint, when one ships
    embeddings/        image embeddings from that checkpoint

A bundle is immutable. It is built in a temporary sibling folder, ``manifest.json`` is written
last, the folder is renamed to a hidden versioned name (``.NAME.v-<ns>``) and the bundle's
path, a symbolic link, is pointed at it with one rename. An open resolves that link once and
holds a shared lock on the version it read, so a reader sees the old bundle or the new one,
never a mix; versions nobody holds are removed by the next build. Opening never writes into
a bundle, and checks each part it reads against the manifest (sizes always, digests of the
files small enough to hash at once): a damaged folder is named as damaged.

An archive (:func:`pack_bundle`) is unpacked once per content into the user cache, member by
member under the same rules (regular files and folders under the bundle root, sizes as the
manifest says), and the cached copy is used only while it matches the archive again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any, cast

from . import __version__, locations
from .atomic import (
    check_file_destination,
    mark_read_only,
    move_aside,
    moved_into_place,
    no_folder_message,
    pid_alive,
    point_link,
    publish_dir,
    remove_left_by_dead,
    temp_dir_beside,
    temp_file_beside,
    umask_mode,
    write_atomic,
)
from .errors import BundleError, InputError, OutputExistsError, ValidationError
from .progress import Progress, silent
from .source import IMAGE_SUFFIX, KeepImage, SourceData, load_source
from .store import Store

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no reader locks, versions are kept until removed by hand
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1
#: ``manifest["format"]``: marks a folder this tool wrote (``--force`` replaces nothing else).
FORMAT_MARK = "medpix-tui bundle"
MANIFEST = "manifest.json"
#: sha256 of manifest.json itself, so a changed manifest is named too.
MANIFEST_SUM = "manifest.json.sha256"
STORE_DIR = "store"
IMAGE_DIR = "images"
PARQUET_DIR = "parquet"
MODEL_DIR = "model"
EMBEDDINGS_DIR = "embeddings"
SEARCH_FILE = "search.sqlite"
DEFAULT_NAME = locations.DEFAULT_BUNDLE_NAME
_TMP_PREFIX = ".medpix-build-"
#: The largest manifest read (the real release's is about 0.5 MB).
MANIFEST_LIMIT = 64 << 20
#: Files up to this size are hashed when first read; larger ones are checked by size only.
DIGEST_LIMIT = 16 << 20
#: Unpacked archives kept in the cache: the ones used last.
KEEP_ARCHIVES = 8
#: Counts every manifest holds (``bundle info`` and ``build`` print them).
COUNT_KEYS = ("Image_Descriptions", "Clinical_Reports", "Image_Reports", "images_ct", "images_mr")
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Manifest keys that differ between two builds of the same source (left out of :attr:`Bundle.content_digest`).
BUILD_VOLATILE = ("created", "build_seconds")
#: The mongita file of a collection's options and indexes, with an ObjectId made at each build.
_STORE_METADATA = "$.metadata"


def default_bundle_path() -> Path:
    """The default bundle (see :func:`.locations.default_bundle` for the rule)."""
    return locations.default_bundle().require()


def default_source_path() -> Path | None:
    """The default source release, None when installed outside a checkout (see :func:`.locations.default_source`)."""
    return locations.default_source().path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- reading files that may be hostile ---------------------------------------------

def open_regular(path: Path) -> IO[bytes]:
    """Open ``path`` for reading only if it is a regular file (not a link, FIFO or device).

    ``O_NONBLOCK`` keeps a FIFO planted under a bundle file's name from blocking the open.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (OSError otherwise)."""
    with open_regular(path) as f:
        if os.fstat(f.fileno()).st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def unreadable_why(exc: OSError) -> str:
    """What :func:`open_regular`'s refusal or a read's failure says of a file, after its name."""
    if exc.errno in (errno.ELOOP, errno.EINVAL):  # a link (never followed), a FIFO or a device
        return "is not a regular file"
    return f"is unreadable ({exc.strerror or exc})"


def sha256_regular(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a regular file (OSError for anything else)."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _walk(root: Path) -> dict[str, os.stat_result]:
    """relative path -> lstat of every entry under ``root`` that is not a plain folder (links not followed)."""
    out: dict[str, os.stat_result] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        base = Path(folder)
        for name in [*dirs, *files]:
            path = base / name
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                out[path.relative_to(root).as_posix()] = st
        dirs[:] = [d for d in dirs if not (base / d).is_symlink()]
    return out


def file_digests(root: Path, progress: Progress = silent) -> dict[str, dict[str, Any]]:
    """relative path -> {sha256, size} for every file under ``root`` except the manifest."""
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.relative_to(root).as_posix() not in (MANIFEST, MANIFEST_SUM))
    out = {}
    with progress("Hashing files", len(files)) as advance:
        for path in files:
            out[path.relative_to(root).as_posix()] = {"sha256": sha256_regular(path), "size": path.stat().st_size}
            advance(1)
    return out


# -- building ------------------------------------------------------------------------

def _copy_images(source: SourceData, dest: Path, progress: Progress) -> None:
    dest.mkdir()
    with progress("Copying images", len(source.images)) as advance:
        for doc in source.images:
            shutil.copyfile(source.image_path(doc["image"]), dest / f"{doc['image']}{IMAGE_SUFFIX}")
            advance(1)


_FACTS = "\0facts"  # the key of the pictures' facts among the kept pictures (no image id has a NUL)


def _keep_pictures(ckpt: Path | None) -> tuple[dict[str, Any], KeepImage | None]:
    """A dict that validation fills with the model's picture of each image it decodes, and
    what classify's rules read of it (:func:`~.model.preprocess.picture_facts`)."""
    pictures: dict[str, Any] = {}
    if ckpt is None:
        return pictures, None
    from .model import input_size
    from .model.preprocess import picture_of

    size = input_size(ckpt)
    facts: dict[str, dict[str, Any]] = {}
    pictures[_FACTS] = facts

    def keep(name: str, im: Any) -> None:
        pictures[name], facts[name] = picture_of(im, size)

    return pictures, keep


def _add_model(tmp: Path, source: SourceData, ckpt: Path, pictures: dict[str, Any],
               progress: Progress) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Copy the checkpoint, embed every image with it (from the pictures validation kept) and
    answer for each (:mod:`.model.predictions`); returns the manifest's model entry and the
    ``Prediction`` of each image id."""
    from . import model
    from .model.case_text import write_case_embeddings
    from .model.predictions import predict_images
    from .model.similarity import load_index

    shutil.copytree(ckpt, tmp / MODEL_DIR)
    images = [(d["image"], tmp / IMAGE_DIR / f"{d['image']}{IMAGE_SUFFIX}") for d in source.images]
    facts = pictures.pop(_FACTS, {})
    info = model.write_embeddings(tmp / MODEL_DIR, images, tmp / EMBEDDINGS_DIR, progress, pictures)
    index = load_index(tmp / EMBEDDINGS_DIR)  # the stored (float16) vectors, the ones queries use
    if index.ids != [name for name, _ in images]:
        raise BundleError("the embeddings just written do not follow the images' order")
    predictions, summary = predict_images(tmp / MODEL_DIR, images, index.vectors, pictures, facts, progress)
    cases = write_case_embeddings(source.cases, tmp / EMBEDDINGS_DIR, progress)
    return ({"checkpoint": MODEL_DIR, "embeddings": EMBEDDINGS_DIR, **info, "case_texts": cases,
             "predictions": summary}, predictions)


def _with_predictions(source: SourceData, predictions: dict[str, dict[str, Any]]) -> SourceData:
    """The source with each image's ``Prediction`` (the store and Parquet carry it; none without a model)."""
    if not predictions:
        return source
    from dataclasses import replace

    from .model.predictions import attach

    return replace(source, images=attach(source.images, predictions))


def _write_failed(exc: BaseException) -> str | None:
    """The reason, when ``exc`` is a failed write (disk full, quota, read-only, I/O) from any library."""
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        failure = exc.args[0][0]  # copytree's list of (source, destination, why): the first one says it
        return str(failure[2]).split("] ", 1)[-1] if isinstance(failure, tuple) and len(failure) == 3 else str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = str(exc)
    if type(exc).__name__ in ("IOException", "OperationalError", "OutOfMemoryException") and any(
            w in text.lower() for w in ("disk", "space", "full", "write", "i/o", "read-only", "readonly")):
        return text.splitlines()[0][:200] if text else type(exc).__name__
    return None


def _checkpoint_for_build(model_dir: Path | None) -> Path:
    """The checkpoint a build copies: ``model_dir``, else the shipped one.

    An error naming the rule when there is none.
    """
    from .model.checkpoint import is_checkpoint

    found = locations.model_dir(model_dir)
    if not is_checkpoint(found.require()):
        raise InputError(f"not a model checkpoint: {found.path} ({found.rule}; it has no open_clip_config.json)")
    return found.require()


def build_bundle(source_dir: Path, out: Path, *, force: bool = False, progress: Progress = silent,
                 with_model: bool = True, model_dir: Path | None = None, parents: bool = False) -> Path:
    """Validate ``source_dir`` and build a bundle at ``out`` atomically; return ``out``.

    The bundle gets ``model_dir``, else the shipped checkpoint (:func:`.locations.model_dir`:
    the checkout's or the installed package's), or none without ``with_model``; a build with a
    model but no checkpoint to be found fails before it writes anything. ``force`` replaces only
    a bundle this tool wrote (:func:`check_ours`); readers of the old one keep reading it.
    """
    from .export import write_parquet

    out = Path(out)
    if (out.exists() or out.is_symlink()) and not force:
        raise OutputExistsError(f"{out} already exists (use --force to replace it)")
    src, target = Path(source_dir).resolve(), out.resolve()
    if target == src or target in src.parents or src in target.parents:  # --force would delete the source
        raise InputError(f"refusing to build into {out}: it overlaps the source folder {source_dir}")
    check_ours(out)
    ckpt = _checkpoint_for_build(model_dir) if with_model else None
    pictures, keep = _keep_pictures(ckpt)
    source = load_source(source_dir, progress=progress, keep=keep)
    parent = out.parent if str(out.parent) else Path(".")
    if parents:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create {parent}: {exc.strerror}") from None
    if not parent.is_dir():
        raise InputError(f"cannot build {out}: {no_folder_message(parent)}")
    remove_stale_temporaries(parent)
    tmp = temp_dir_beside(out, prefix=f"{_TMP_PREFIX}{os.getpid()}-")
    try:
        os.chmod(tmp, umask_mode())  # mkdtemp's 0700 would hide the bundle from other users
        started = time.perf_counter()
        _copy_images(source, tmp / IMAGE_DIR, progress)
        model_info, predictions = _add_model(tmp, source, ckpt, pictures, progress) if ckpt else (None, {})
        store = Store.open_mongita(tmp / STORE_DIR, writable=True)
        try:
            with progress("Writing store", 1) as advance:
                counts = store.load(_with_predictions(source, predictions))
                advance(1)
            with progress("Writing Parquet", 1) as advance:
                write_parquet(store, tmp / PARQUET_DIR)
                advance(1)
            with progress("Indexing text", 1) as advance:
                from .search import SearchIndex

                SearchIndex.build(source.images, source.cases, tmp / SEARCH_FILE).close()
                advance(1)
        finally:
            store.close()
        manifest = {
            "format": FORMAT_MARK,
            "format_version": FORMAT_VERSION,
            "tool_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": {"path": str(source.root), "digests": source.digests},
            "counts": {**counts, "images_ct": sum(d["Type"] == "CT" for d in source.images),
                       "images_mr": sum(d["Type"] == "MR" for d in source.images), "splits": source.split_counts()},
            "model": model_info,
            "build_seconds": None,
            "files": file_digests(tmp, progress),
        }
        manifest["build_seconds"] = round(time.perf_counter() - started, 2)
        _write_json_atomic(tmp / MANIFEST, manifest)
        (tmp / MANIFEST_SUM).write_text(f"{sha256_regular(tmp / MANIFEST)}  {MANIFEST}\n")
        _fsync_dir(tmp)
        if (out.exists() or out.is_symlink()) and not force:  # another process made it while this one built
            raise OutputExistsError(f"{out} appeared while this build ran (use --force to replace it)")
        check_ours(out)
        _publish(tmp, out)
        _fsync_dir(parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = _write_failed(exc)
        if reason is not None and not isinstance(exc, InputError):
            raise InputError(f"cannot write the bundle {out}: {reason} (nothing was written)") from None
        raise
    prune_versions(out)
    return out


def _pid_of(name: str) -> int | None:
    try:
        return int(name[len(_TMP_PREFIX):].split("-", 1)[0])
    except ValueError:
        return None


def _owner_gone(tmp: Path) -> bool:
    """A stale temporary folder is one whose process no longer runs."""
    pid = _pid_of(tmp.name)
    return pid is None or not pid_alive(pid)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove what killed builds, packs and unpacks left in ``folder`` (named ``.medpix-build-PID-...``)."""
    return remove_left_by_dead(folder, lambda name: name.startswith(_TMP_PREFIX), _pid_of)


def _version_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(name)}\.v-\d+-\d+")


def _publish(tmp: Path, out: Path) -> None:
    """Rename the built folder to a new version of ``out`` and point ``out`` at it with one rename."""
    version = out.with_name(f".{out.name}.v-{time.time_ns()}-{os.getpid()}")
    publish_dir(tmp, version)
    point_link(out, version.name, prefix=f"{_TMP_PREFIX}{os.getpid()}-")


def _remove_unheld(folder: Path, manifest: Path | None) -> bool:
    """Remove ``folder`` unless a reader holds a shared lock on ``manifest``; False if one does."""
    lock = None
    if manifest is not None:
        with contextlib.suppress(OSError):
            lock = open_regular(manifest)
    try:
        if lock is not None and fcntl is not None:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
        try:  # renamed while locked: an open that resolved it sees it gone
            trash = move_aside(folder, prefix=f"{_TMP_PREFIX}{os.getpid()}-")
        except OSError:
            return False
    finally:
        if lock is not None:
            lock.close()
    if trash.is_dir() and not trash.is_symlink():
        shutil.rmtree(trash, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            trash.unlink()
    return True


def prune_versions(out: Path) -> list[Path]:
    """Remove the versions of ``out`` it no longer points at and no reader holds; return those removed."""
    out = Path(out)
    current = os.readlink(out) if out.is_symlink() else None
    pattern = _version_pattern(out.name)
    removed = []
    with contextlib.suppress(OSError):
        for entry in out.parent.iterdir():
            if entry.name == current or not pattern.fullmatch(entry.name) or not entry.is_dir() or entry.is_symlink():
                continue
            builder = int(entry.name.rsplit("-", 1)[1])
            if builder != os.getpid() and pid_alive(builder):
                continue  # another build's, perhaps about to be pointed at: its own build prunes it
            if _remove_unheld(entry, entry / MANIFEST):
                removed.append(entry)
    return removed


def _refuse(out: Path, why: str) -> InputError:
    return InputError(f"refusing to replace {out}: it is not a folder this tool wrote ({why}); "
                      "remove it yourself or choose another --out")


def check_ours(out: Path) -> None:
    """Refuse to replace ``out`` unless it is absent, an empty folder, or a bundle this tool wrote.

    A bundle of ours has a manifest with :data:`FORMAT_MARK` (or, from before the mark, the
    format version and a matching ``manifest.json.sha256``) and exactly the files it lists, at
    their sizes: a folder holding anything else is somebody's, and is never deleted.
    """
    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink():
        target = os.readlink(out)
        if "/" in target or not _version_pattern(out.name).fullmatch(target):
            raise _refuse(out, f"a symbolic link this tool did not make, to {target}")
        if not (out.parent / target).exists() and not (out.parent / target).is_symlink():
            return  # our link, its version removed by hand: nothing to lose
        if not (out.parent / target).is_dir() or (out.parent / target).is_symlink():
            raise _refuse(out, f"a link to {target}, which is not a bundle folder")
        out = out.parent / target
    elif not out.is_dir():
        raise _refuse(out, "a file, not a bundle folder")
    try:
        if not any(out.iterdir()):
            return
        raw = read_regular(out / MANIFEST, MANIFEST_LIMIT)
    except FileNotFoundError:
        raise _refuse(out, f"no {MANIFEST}") from None
    except OSError as exc:
        raise _refuse(out, f"its {MANIFEST} cannot be read: {exc.strerror or exc}") from None
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _refuse(out, f"its {MANIFEST} is not JSON") from None
    legacy = False
    with contextlib.suppress(OSError):
        legacy = read_regular(out / MANIFEST_SUM, 1024) == f"{hashlib.sha256(raw).hexdigest()}  {MANIFEST}\n".encode()
    if not isinstance(manifest, dict) or not (manifest.get("format") == FORMAT_MARK or (
            legacy and manifest.get("format_version") == FORMAT_VERSION and "tool_version" in manifest)):
        raise _refuse(out, f"its {MANIFEST} is not a medpix-tui bundle manifest")
    problem = manifest_problem(manifest)
    if problem:
        raise _refuse(out, f"its {MANIFEST} is malformed: {problem}")
    present = _walk(out)
    expected = {**manifest["files"]}
    extra = sorted(set(present) - set(expected) - {MANIFEST, MANIFEST_SUM})
    if extra:
        raise _refuse(out, "it holds files its manifest does not list: "
                           f"{', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}")
    differ = sorted(rel for rel, entry in expected.items()
                    if rel not in present or not stat.S_ISREG(present[rel].st_mode)
                    or present[rel].st_size != entry["size"])
    if differ:
        raise _refuse(out, "its files do not match its manifest: "
                           f"{', '.join(differ[:3])}{', ...' if len(differ) > 3 else ''}")


def _write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False))


# -- the manifest ----------------------------------------------------------------------

def _verify_hint(root: Path) -> str:
    return f"check it with: medpix-tui bundle verify {root}"


def damaged(root: Path, rel: str, why: str) -> BundleError:
    """The one line for a damaged part of a bundle: which file, what is wrong, what to run."""
    return BundleError(f"damaged bundle: {Path(root) / rel} {why}; {_verify_hint(root)}")


def safe_relative(rel: Any) -> bool:
    """A plain relative path inside a bundle: no '..', '.', empty or absolute parts, no backslash or NUL."""
    return (isinstance(rel, str) and bool(rel) and "\\" not in rel and "\0" not in rel
            and all(part not in ("", ".", "..") for part in rel.split("/")))


def manifest_problem(manifest: Any) -> str | None:
    """What is wrong with the shape of a manifest (None: it has the shape this version writes)."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    if manifest.get("format_version") != FORMAT_VERSION:
        return f"bundle format {manifest.get('format_version')!r}; this version reads {FORMAT_VERSION}"
    files = manifest.get("files")
    if not isinstance(files, dict):
        return "no 'files' object"
    for rel, entry in files.items():
        if not safe_relative(rel) or rel in (MANIFEST, MANIFEST_SUM):
            return f"file name {rel!r}"
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and _HEX64.fullmatch(entry["sha256"])
                and type(entry.get("size")) is int and entry["size"] >= 0):
            return f"the entry of {rel!r} is not {{sha256, size}}"
    counts = manifest.get("counts")
    if not isinstance(counts, dict):
        return "no 'counts' object"
    for key in COUNT_KEYS:
        if type(counts.get(key)) is not int:
            return f"counts.{key} is not a number"
    splits = counts.get("splits")
    if not (isinstance(splits, dict) and all(isinstance(k, str) and type(v) is int for k, v in splits.items())):
        return "counts.splits is not an object of numbers"
    if not isinstance(manifest.get("model"), (dict, type(None))):
        return "'model' is neither null nor an object"
    for key in ("tool_version", "created"):
        if not isinstance(manifest.get(key), str):
            return f"{key!r} is not a string"
    return None


def check_manifest(manifest: Any, path: Path) -> None:
    """Refuse a manifest that does not have the shape this version writes (one line naming it)."""
    problem = manifest_problem(manifest)
    if problem:
        raise damaged(Path(path).parent, MANIFEST, f"is malformed ({problem})")


def _parse_manifest(raw: bytes, path: Path) -> dict[str, Any]:
    root = Path(path).parent
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(root, MANIFEST, f"is unreadable ({exc})") from None
    if isinstance(manifest, dict) and "format_version" in manifest and manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(f"{root} has bundle format {manifest.get('format_version')!r}; "
                          f"this version reads {FORMAT_VERSION}")
    check_manifest(manifest, path)
    return cast(dict[str, Any], manifest)


def read_manifest(root: Path) -> dict[str, Any]:
    """The bundle's manifest; a clear error when it is missing, unreadable or malformed."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise BundleError(f"bundle not found: {root}")
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{root} is not a complete bundle (no {MANIFEST})")
    try:
        raw = read_regular(path, MANIFEST_LIMIT)
    except OSError as exc:
        raise damaged(Path(root), MANIFEST, f"is unreadable ({exc.strerror or exc})") from None
    return _parse_manifest(raw, path)


@dataclass
class VerifyReport:
    """Files of a bundle that differ from its manifest."""

    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    checked: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.added or self.changed)

    def lines(self) -> list[str]:
        return ([f"missing: {p}" for p in self.missing] + [f"added: {p}" for p in self.added]
                + [f"changed: {p}" for p in self.changed])


def verify_bundle(root: Path, progress: Progress = silent) -> VerifyReport:
    """Recheck every digest of the manifest against the files on disk.

    Links, FIFOs and devices are never opened: one in a file's place is a changed file,
    anywhere else an added one. An archive made by :func:`pack_bundle` is unpacked into a
    temporary folder (removed after) and its bundle checked the same way.
    """
    root = Path(os.path.realpath(root))
    if root.is_file():
        return _verify_archive(root, progress)
    try:
        manifest = read_manifest(root)
    except BundleError:
        if (root / MANIFEST).exists() or (root / MANIFEST).is_symlink():
            return VerifyReport(changed=[MANIFEST])
        raise
    expected: dict[str, Any] = manifest["files"]
    present = _walk(root)
    present.pop(MANIFEST, None)
    report = VerifyReport()
    sum_st = present.pop(MANIFEST_SUM, None)
    if sum_st is None:
        report.missing.append(MANIFEST_SUM)
    else:
        digest = sha256_regular(root / MANIFEST)
        try:
            written = read_regular(root / MANIFEST_SUM, 1024)
        except OSError:
            written = b""
        if written.decode(errors="replace").split(" ")[0] != digest:
            report.changed.append(MANIFEST)
        elif written != f"{digest}  {MANIFEST}\n".encode():  # the digest holds, the rest was edited
            report.changed.append(MANIFEST_SUM)
    report.missing += sorted(set(expected) - set(present))
    report.added = sorted(set(present) - set(expected))
    with progress("Verifying", len(expected)) as advance:
        for rel in sorted(set(expected) & set(present)):
            entry, st = expected[rel], present[rel]
            try:
                same = (stat.S_ISREG(st.st_mode) and st.st_size == entry["size"]
                        and sha256_regular(root / rel) == entry["sha256"])
            except OSError:
                same = False
            if not same:
                report.changed.append(rel)
            report.checked += 1
            advance(1)
    return report


# -- opening ---------------------------------------------------------------------------

def _hold(path: Path) -> tuple[Path, IO[bytes] | None, bytes]:
    """Resolve ``path`` once and hold the folder it names: (folder, locked manifest, manifest bytes).

    The shared lock on the manifest keeps :func:`prune_versions` from removing the version
    while it is read; the inode check after locking catches a version removed meanwhile.
    """
    for _ in range(50):
        root = Path(os.path.realpath(path))
        if not root.is_dir():
            raise BundleError(f"bundle not found: {path}")
        try:
            f = open_regular(root / MANIFEST)
        except FileNotFoundError:
            if Path(os.path.realpath(path)) != root:
                continue  # rebuilt meanwhile: resolve again
            raise BundleError(f"{path} is not a complete bundle (no {MANIFEST})") from None
        except OSError as exc:
            raise damaged(root, MANIFEST, f"is unreadable ({exc.strerror or exc})") from None
        try:
            if fcntl is not None:
                with contextlib.suppress(OSError):  # no locks on this file system: versions are still kept
                    fcntl.flock(f.fileno(), fcntl.LOCK_SH)
            try:
                still = os.path.samestat(os.fstat(f.fileno()), os.stat(root / MANIFEST))
            except OSError:
                still = False
            if not still:
                f.close()
                continue
            if os.fstat(f.fileno()).st_size > MANIFEST_LIMIT:
                raise damaged(root, MANIFEST, f"is larger than {MANIFEST_LIMIT >> 20} MB")
            raw = f.read(MANIFEST_LIMIT + 1)
        except BaseException:
            f.close()
            raise
        return root, f, raw
    raise BundleError(f"{path} keeps changing while it is opened; try again")


class Bundle:
    """An opened, read-only bundle.

    ``root`` is the folder the bundle's path named when it was opened (a rebuild of that path
    does not change it); ``path`` is the path as given, for messages.
    """

    def __init__(self, root: Path, manifest: dict[str, Any], *, path: Path | None = None,
                 lock: IO[bytes] | None = None) -> None:
        self.root = Path(root)
        self.path = Path(path) if path is not None else self.root
        self.manifest = manifest
        self._lock = lock
        self._checked: set[str] = set()
        mark_read_only(self.root)  # no export or save of this process writes into it

    def checked(self, rel: str) -> Path:
        """The path of the bundle file ``rel`` once it matches the manifest (size; digest when small)."""
        path = self.root / rel
        files = self.manifest.get("files")
        if rel in self._checked or not isinstance(files, dict):
            return path
        entry = files.get(rel)
        if not isinstance(entry, dict):
            raise damaged(self.root, rel, "is not listed in the manifest")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise damaged(self.root, rel, "is missing") from None
        except OSError as exc:
            raise damaged(self.root, rel, f"is unreadable ({exc.strerror or exc})") from None
        if not stat.S_ISREG(st.st_mode):
            raise damaged(self.root, rel, "is not a regular file")
        if st.st_size != entry.get("size"):
            raise damaged(self.root, rel, f"has {st.st_size} bytes where the manifest says {entry.get('size')}")
        if st.st_size <= DIGEST_LIMIT:
            try:
                digest = sha256_regular(path)
            except OSError as exc:
                raise damaged(self.root, rel, f"is unreadable ({exc.strerror or exc})") from None
            if digest != entry.get("sha256"):
                raise damaged(self.root, rel, "does not match its digest in the manifest")
        self._checked.add(rel)
        return path

    def checked_dir(self, rel_dir: str) -> Path:
        """``rel_dir`` once every manifest file under it is checked (see :meth:`checked`)."""
        files = self.manifest.get("files")
        if isinstance(files, dict):
            for rel in sorted(files):
                if rel.startswith(f"{rel_dir}/"):
                    self.checked(rel)
        return self.root / rel_dir

    @cached_property
    def digest(self) -> str:
        """The bundle's identity, the sha256 of its manifest: what names its kept first page,
        remembered search, quiz progress and the exports made from it. Read from
        ``manifest.json.sha256`` (a regular file); without one the bundle is named damaged."""
        return written_digest(self.root)

    @cached_property
    def content_digest(self) -> str:
        """The sha256 of what the bundle holds, the same for two builds of one source: its manifest less
        what differs between such builds (:data:`BUILD_VOLATILE`, the store's metadata files, which hold
        fresh ObjectIds), so an export made from one is reproduced from the other."""
        manifest = {k: v for k, v in self.manifest.items() if k not in BUILD_VOLATILE}
        files = manifest.get("files")
        if isinstance(files, dict):
            manifest["files"] = {rel: entry for rel, entry in files.items()
                                 if not (rel.startswith(f"{STORE_DIR}/") and rel.endswith(_STORE_METADATA))}
        source = manifest.get("source")
        if isinstance(source, dict):
            manifest["source"] = {k: v for k, v in source.items() if k != "path"}
        text = json.dumps(manifest, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @property
    def parquet_dir(self) -> Path:
        return self.checked_dir(PARQUET_DIR)

    @property
    def model_dir(self) -> Path:
        return self.checked_dir(MODEL_DIR)

    @property
    def embeddings_dir(self) -> Path:
        return self.checked_dir(EMBEDDINGS_DIR)

    def image_path(self, name: str) -> Path:
        """The PNG of an image (names are plain ids, checked at build time)."""
        return self.root / IMAGE_DIR / f"{name}{IMAGE_SUFFIX}"

    def read_image(self, name: str, sink: Callable[[bytes], object]) -> None:
        """Stream the PNG of an image into ``sink``, hashed on the way (one read): an image changed
        since the build is named damaged, so an export never passes it on under its recorded digest.

        The sink has had the bytes when that is found: write them only to a temporary.
        """
        rel = f"{IMAGE_DIR}/{name}{IMAGE_SUFFIX}"
        files = self.manifest.get("files")
        entry = files.get(rel) if isinstance(files, dict) else None
        if not isinstance(entry, dict):
            raise damaged(self.root, rel, "is not listed in the manifest")
        h = hashlib.sha256()
        sink_failed: list[OSError] = []
        try:
            with open_regular(self.root / rel) as f:
                while block := f.read(1 << 20):
                    h.update(block)
                    try:
                        sink(block)
                    except OSError as exc:  # the output's fault (a full disk), not the bundle's
                        sink_failed.append(exc)
                        break
        except FileNotFoundError:
            raise damaged(self.root, rel, "is missing") from None
        except OSError as exc:
            raise damaged(self.root, rel, f"is unreadable ({exc.strerror or exc})") from None
        if sink_failed:
            raise sink_failed[0]
        if h.hexdigest() != entry.get("sha256"):
            raise damaged(self.root, rel, "does not match its digest in the manifest")

    def copy_image(self, name: str, dest: Path) -> None:
        """Copy the PNG of an image to ``dest``, checked against the manifest (see :meth:`read_image`)."""
        with open(dest, "wb") as out:
            self.read_image(name, out.write)

    def image_bytes(self, name: str) -> bytes:
        """The PNG of an image, checked against the manifest (see :meth:`read_image`)."""
        parts: list[bytes] = []
        self.read_image(name, parts.append)
        return b"".join(parts)

    @cached_property
    def store(self) -> Store:
        self.checked_dir(STORE_DIR)
        index = self.checked(SEARCH_FILE) if SEARCH_FILE in self.manifest.get("files", {}) else self.root / SEARCH_FILE
        try:
            return Store.open_mongita(self.root / STORE_DIR, search_index=index)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise damaged(self.root, STORE_DIR, f"cannot be opened ({type(exc).__name__})") from None

    def split_of(self, uid: str) -> str | None:
        return self.store.split_of(uid)

    def images(self) -> list[dict[str, Any]]:
        """Every image document, in id order."""
        return self.store.find("Image_Descriptions")

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
            del self.__dict__["store"]
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def info(self) -> dict[str, Any]:
        """Counts, versions and provenance, without the per-file digests."""
        info = {k: v for k, v in self.manifest.items() if k != "files"}
        info["path"] = str(self.path)
        info["files"] = len(self.manifest["files"])
        info["bytes"] = sum(int(e.get("size", 0)) for e in self.manifest["files"].values())
        return info


def written_digest(root: Path) -> str:
    """The manifest's sha256 as ``manifest.json.sha256`` names it; the bundle is damaged without one."""
    try:
        words = read_regular(Path(root) / MANIFEST_SUM, 1024).decode("ascii", errors="replace").split()
    except FileNotFoundError:
        raise damaged(root, MANIFEST_SUM, "is missing") from None
    except OSError as exc:
        raise damaged(root, MANIFEST_SUM, unreadable_why(exc)) from None
    if not words or not _HEX64.fullmatch(words[0]):
        raise damaged(root, MANIFEST_SUM, "names no sha256")
    return words[0]


def open_bundle(path: Path | str) -> Bundle:
    """Open a bundle folder, or an archive made by :func:`pack_bundle` (unpacked once, verified)."""
    given = Path(path)
    folder = _unpack_cached(given) if given.is_file() else given
    root, lock, raw = _hold(folder)
    try:
        manifest = _parse_manifest(raw, root / MANIFEST)  # its own faults first (format 99, not JSON): precise
        # every check of the bundle's files trusts the manifest: an edited one (counts, digests) is refused here
        if written_digest(root) != hashlib.sha256(raw).hexdigest():
            raise damaged(root, MANIFEST, f"does not match its digest in {MANIFEST_SUM}")
        return Bundle(root, manifest, path=given, lock=lock)
    except BaseException:
        if lock is not None:
            lock.close()
        raise


def resolve_bundle(path: Path | str | None = None, progress: Progress = silent,
                   source: Path | str | None = None, announce: Callable[[str], None] = lambda line: None) -> Bundle:
    """``path``, else the default bundle (:func:`.locations.default_bundle`), built on first use
    from ``source``, else the default source (:func:`.locations.default_source`).

    A first-use build is told to ``announce`` in a line before and after it, so that a person
    whose progress bars are off (stderr redirected) still learns why the command took seconds.
    """
    if path:
        return open_bundle(path)
    target = locations.default_bundle()
    root = target.require()
    if not (root / MANIFEST).exists():
        src = locations.default_source(source)
        if src.path is None or not src.path.is_dir():
            found = f"no source at {src.describe()} to build it from" if src.path is not None else src.rule
            raise BundleError(f"no bundle at {target.describe()}, and {found}: set ${locations.SOURCE_ENV}, "
                              "run 'medpix-tui bundle build --source DIR', or pass --bundle")
        announce(f"building the default bundle at {root} from {src.path} (first use)")
        try:
            build_bundle(src.path, root, force=root.exists() or root.is_symlink(), progress=progress, parents=True)
        except InputError as exc:  # the user data folder is read-only, or the disk full
            if isinstance(exc, ValidationError):
                raise
            raise BundleError(f"{exc}; build one elsewhere ('medpix-tui bundle build --out DIR') and pass "
                              f"--bundle DIR or set ${locations.BUNDLE_ENV}") from None
        announce(f"built the default bundle at {root}")
    return open_bundle(root)


# -- archives -----------------------------------------------------------------------

#: Archive names that promise compression, which a pack does not do.
_COMPRESSED_NAME = re.compile(r"\.(t?gz|tbz2?|bz2|t?xz|zst|zip|7z|lz4|tar\.[a-z0-9]+)$", re.IGNORECASE)


def pack_bundle(root: Path, archive: Path, *, force: bool = False, progress: Progress = silent) -> Path:
    """Write a verified bundle as one uncompressed tar (PNG and Parquet are compressed already)."""
    root, archive = Path(root), Path(archive)
    if root.is_file():
        raise InputError(f"{root} is a file (an archive is packed already): name a bundle folder to pack")
    if (compressed := _COMPRESSED_NAME.search(archive.name)) is not None:
        raise InputError(f"{archive} names a {compressed.group(0)} file, but a bundle archive is a plain tar "
                         "(its PNG and Parquet are compressed already): "
                         f"name it {archive.name[:compressed.start()]}.tar")
    real_root, real_out = Path(os.path.realpath(root)), Path(os.path.realpath(archive))
    if real_out == real_root or real_root in real_out.parents:
        raise InputError(f"refusing to write {archive} inside the bundle it packs ({root}); choose a path outside it")
    held, lock, _ = _hold(root)  # the version read is kept while it is packed (a rebuild's prune waits)
    try:
        return _pack_held(held, root, archive, force, progress)
    finally:
        if lock is not None:
            lock.close()


def _pack_held(real_root: Path, root: Path, archive: Path, force: bool, progress: Progress) -> Path:
    """:func:`pack_bundle` of the version ``real_root`` that ``root`` named when it was held."""
    report = verify_bundle(real_root)
    if not report.ok:
        raise BundleError(f"{root} does not verify; refusing to pack it ({'; '.join(report.lines()[:5])})")
    # a folder, a missing folder, and a device, FIFO or socket (--force replaced /dev/full with a file)
    check_file_destination(archive, force, _replaceable_archive, suffix=".tar")
    remove_stale_temporaries(archive.parent)
    files = [MANIFEST, MANIFEST_SUM, *sorted(read_manifest(real_root)["files"])]
    tmp = temp_file_beside(archive, prefix=f"{_TMP_PREFIX}{os.getpid()}-pack-")
    with (moved_into_place(tmp, archive, note=" (nothing was written)"),
          tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar, progress("Packing", len(files)) as advance):
        for rel in files:
            tar.add(real_root / rel, arcname=f"{DEFAULT_NAME}/{rel}", recursive=False)
            advance(1)
    return archive


def _replaceable_archive(path: Path) -> str | None:
    """Why ``path`` is no earlier pack that ``--force`` may replace (None: it is a tar whose first member
    is a bundle's manifest, as :func:`pack_bundle` writes them): somebody's file is never overwritten."""
    try:
        with open_regular(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            first = tar.next()
    except (OSError, tarfile.TarError):
        return "it is no bundle archive of this tool"
    if first is None or first.name != f"{DEFAULT_NAME}/{MANIFEST}":
        return "it is no bundle archive of this tool"
    return None


def cache_dir() -> Path:
    """Where archives are unpacked (see :func:`.locations.cache_dir`)."""
    return locations.cache_dir().require()


def archive_cache() -> Path:
    """``bundles/`` in the cache folder, created; one clear line when the cache folder is unusable."""
    base = cache_dir()
    rule = "MEDPIX_CACHE" if os.environ.get("MEDPIX_CACHE") else "the user cache folder"
    folder = base / "bundles"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise BundleError(f"cannot use the cache folder {base} ({rule}): it or a folder above it is a file") from None
    except OSError as exc:
        raise BundleError(f"cannot use the cache folder {base} ({rule}): {exc.strerror or exc}") from None
    if not folder.is_dir() or folder.is_symlink():
        raise BundleError(f"cannot use the cache folder {base} ({rule}): {folder} is not a folder")
    return folder


def _member_problem(member: tarfile.TarInfo) -> str | None:
    """Why one archive member is refused, or None: only plain files and folders under the bundle root."""
    name = member.name
    if member.issym() or member.islnk():
        return "a link"
    if member.ischr() or member.isblk() or member.isfifo():
        return "a device or FIFO"
    if member.issparse() or getattr(member, "sparse", None) is not None:
        return "a sparse file"
    if not (member.isreg() or member.isdir()):
        return "not a plain file or folder"
    if member.mode & 0o7000:
        return "marked setuid, setgid or sticky"
    parts = name.split("/")
    if (parts[0] != DEFAULT_NAME or (len(parts) > 1 and not safe_relative("/".join(parts[1:])))
            or "\\" in name or "\0" in name):
        return f"outside the bundle folder {DEFAULT_NAME}/"
    if member.isfile() and len(parts) == 1:
        return "the bundle root as a file"
    return None


def read_archive(tar: tarfile.TarFile, archive: Path) -> tuple[list[tarfile.TarInfo], bytes, dict[str, Any]]:
    """Check every member of a bundle archive before anything is written: (members, manifest bytes, manifest).

    Refused: links, devices, FIFOs, sparse members, setuid bits, names outside ``medpix-2.0/``,
    duplicates, files the manifest does not list or lists at another size, and members whose
    data is not all inside the archive (a member declaring more bytes than the file holds).
    """
    size = (os.fstat(tar.fileobj.fileno()).st_size
            if tar.fileobj is not None and hasattr(tar.fileobj, "fileno") else None)

    def refuse(why: str) -> BundleError:
        return BundleError(f"{archive} is not a bundle archive ({why})")

    members = tar.getmembers()
    seen: set[str] = set()
    by_rel: dict[str, tarfile.TarInfo] = {}
    for member in members:
        problem = _member_problem(member)
        if problem:
            raise refuse(f"entry {member.name!r} is {problem}")
        if member.name in seen:
            raise refuse(f"entry {member.name!r} appears twice")
        seen.add(member.name)
        if size is not None and member.offset_data + member.size > size:
            raise refuse(f"entry {member.name!r} declares {member.size} bytes the archive does not hold")
        if member.isfile():
            by_rel[member.name.split("/", 1)[1]] = member
    for rel in (MANIFEST, MANIFEST_SUM):
        if rel not in by_rel:
            raise refuse(f"no {DEFAULT_NAME}/{rel}")
    if by_rel[MANIFEST].size > MANIFEST_LIMIT:
        raise refuse(f"{MANIFEST} is larger than {MANIFEST_LIMIT >> 20} MB")
    f = tar.extractfile(by_rel[MANIFEST])
    raw = f.read() if f is not None else b""
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError(f"{archive} does not verify: changed: {MANIFEST} (not JSON)") from None
    problem = manifest_problem(manifest)
    if problem:
        raise BundleError(f"{archive} does not verify: changed: {MANIFEST} ({problem})")
    files: dict[str, Any] = manifest["files"]
    for rel, member in by_rel.items():
        if rel in (MANIFEST, MANIFEST_SUM):
            continue
        entry = files.get(rel)
        if entry is None:
            raise refuse(f"entry {member.name!r} is not in its manifest")
        if member.size != entry["size"]:
            raise BundleError(f"{archive} does not verify: changed: {rel} "
                              f"({member.size} bytes, the manifest says {entry['size']})")
    folders = {"/".join(rel.split("/")[:i]) for rel in files for i in range(1, rel.count("/") + 1)}
    for member in members:
        if member.isdir() and "/" in member.name and member.name.split("/", 1)[1] not in folders:
            raise refuse(f"entry {member.name!r} is a folder its manifest does not hold")
        if member.isdir() and "/" in member.name and member.name.split("/", 1)[1] in files:
            raise refuse(f"entry {member.name!r} is a folder where its manifest lists a file")
    missing = sorted(set(files) - set(by_rel))
    if missing:
        raise BundleError(f"{archive} does not verify: missing: {missing[0]}")
    return members, raw, manifest


def _has_data_filter() -> bool:
    """Whether this Python's tarfile has extraction filters (3.11.4 and later, 3.12)."""
    return hasattr(tarfile, "data_filter")


def _extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], dest: Path) -> None:
    """Write the checked members under ``dest``: through the ``data`` filter where this Python has
    it, else member by member here (3.11.0 to 3.11.3), with the same result."""
    if _has_data_filter():
        tar.extractall(dest, members=members, filter="data")
        return
    for member in members:
        target = dest.joinpath(*member.name.split("/"))
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tar.extractfile(member)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as out:
            left = member.size
            while left > 0 and src is not None:
                block = src.read(min(left, 1 << 20))
                if not block:
                    raise tarfile.ReadError(f"unexpected end of data in {member.name}")
                out.write(block)
                left -= len(block)


def _entry_matches(entry: Path, manifest_raw: bytes) -> bool:
    """Whether a cache entry is a plain folder holding exactly the bundle the archive's manifest describes."""
    try:
        if entry.is_symlink() or not entry.is_dir() or [p.name for p in entry.iterdir()] != [DEFAULT_NAME]:
            return False
        root = entry / DEFAULT_NAME
        if root.is_symlink() or read_regular(root / MANIFEST, MANIFEST_LIMIT) != manifest_raw:
            return False
        return verify_bundle(root).ok
    except (OSError, BundleError):
        return False


def _discard(entry: Path) -> None:
    """Remove a cache entry that must never be served (renamed first, so nobody opens it half-removed)."""
    _remove_unheld(entry, None)  # no lock asked for: a bad copy goes even while held


def prune_archive_cache(folder: Path, keep: int = KEEP_ARCHIVES) -> list[Path]:
    """Keep the ``keep`` unpacked archives used last; remove the others nobody holds, and
    anything in the folder not named like an entry (64 hex digits) or a live temporary."""
    removed = list(remove_stale_temporaries(folder))
    entries = []
    with contextlib.suppress(OSError):
        for entry in Path(folder).iterdir():
            if entry.name.startswith(_TMP_PREFIX):
                continue
            if not _HEX64.fullmatch(entry.name) or entry.is_symlink() or not entry.is_dir():
                _discard(entry)
                removed.append(entry)
                continue
            with contextlib.suppress(OSError):
                entries.append((entry.stat().st_mtime_ns, entry))
    for _, entry in sorted(entries, reverse=True)[keep:]:
        if _remove_unheld(entry, entry / DEFAULT_NAME / MANIFEST):
            removed.append(entry)
    return removed


def _remove_legacy_entries(base: Path) -> None:
    """Unpacked copies of earlier versions (``NAME-SIZE-MTIME/`` with ``.verified``), directly in the cache folder."""
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            if re.fullmatch(r".+-\d+-\d+", entry.name) and (entry / ".verified").is_file() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tarfile.TarFile]:
    try:
        f = open_regular(archive)
    except OSError as exc:
        raise BundleError(f"cannot read {archive}: {exc.strerror or exc}") from None
    with f:
        try:
            with tarfile.open(fileobj=f, mode="r:") as tar:
                yield tar
        except (tarfile.TarError, EOFError, OSError, UnicodeError, ValueError) as exc:
            raise BundleError(f"{archive} is damaged or not a bundle archive ({exc})") from None


def _verify_archive(archive: Path, progress: Progress) -> VerifyReport:
    import tempfile

    with _open_archive(archive) as tar:
        members, _, _ = read_archive(tar, archive)
        with tempfile.TemporaryDirectory(prefix="medpix-verify-") as tmp:
            try:
                _extract(tar, members, Path(tmp))
            except (tarfile.TarError, EOFError) as exc:
                raise BundleError(f"{archive} is damaged or not a bundle archive ({exc})") from None
            except OSError as exc:
                raise BundleError(f"cannot unpack {archive} to verify it: {exc.strerror or exc}") from None
            return verify_bundle(Path(tmp) / DEFAULT_NAME, progress)


def _unpack_cached(archive: Path) -> Path:
    """The bundle folder of an archive: its cached copy if that still matches, else unpacked anew.

    The cache entry is named by the archive's sha256 (one copy per content, whatever its name or
    mtime); a copy is served only if its manifest is the archive's byte for byte and every file
    verifies against it, else it is removed and unpacked again. Unpacking writes a temporary
    folder renamed into place once it verifies, so a killed unpack leaves nothing that is served.
    """
    try:
        digest = sha256_regular(archive)
    except OSError as exc:
        raise BundleError(f"cannot read {archive}: {exc.strerror or exc}") from None
    with _open_archive(archive) as tar:
        members, raw, _ = read_archive(tar, archive)  # before anything is written
        cache = archive_cache()
        _remove_legacy_entries(cache.parent)
        entry = cache / digest
        if entry.exists() or entry.is_symlink():
            if _entry_matches(entry, raw):
                with contextlib.suppress(OSError):
                    os.utime(entry)  # a copy in use is a recent one: pruning keeps it
                prune_archive_cache(cache)
                return entry / DEFAULT_NAME
            _discard(entry)  # tampered, planted or partial: never served
        remove_stale_temporaries(cache)
        try:
            tmp = temp_dir_beside(entry, prefix=f"{_TMP_PREFIX}{os.getpid()}-")
        except InputError as exc:
            raise BundleError(f"cannot unpack {archive} into the cache folder {cache}: {exc}") from None
        try:
            try:
                _extract(tar, members, tmp)
            except (tarfile.TarError, EOFError) as exc:
                raise BundleError(f"{archive} is damaged or not a bundle archive ({exc})") from None
            except OSError as exc:
                raise BundleError(f"cannot unpack {archive} into the cache folder {cache}: "
                                  f"{exc.strerror or exc}") from None
            report = verify_bundle(tmp / DEFAULT_NAME)
            if not report.ok:
                raise BundleError(f"{archive} does not verify: {'; '.join(report.lines()[:5])}")
            os.chmod(tmp, umask_mode())
            if not publish_dir(tmp, entry):  # another process unpacked it first
                if not _entry_matches(entry, raw):
                    raise BundleError(f"cannot unpack {archive} into the cache folder {cache}: "
                                      f"{entry} is in the way") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    prune_archive_cache(cache)
    return entry / DEFAULT_NAME
