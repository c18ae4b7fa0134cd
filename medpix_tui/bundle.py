"""The offline bundle: one folder (or one archive) holding everything the app needs.

Layout::

    manifest.json      format version, source digests, counts, model, sha256 of every file
    store/             mongita database (Image_Descriptions, Clinical_Reports, Image_Reports, Splits)
    images/            the PNGs
    parquet/           images.parquet, cases.parquet, image_reports.parquet
    search.sqlite      keyword index (SQLite FTS5)
    model/             the CLIP checkpoint, when one ships
    embeddings/        image embeddings from that checkpoint

A bundle is immutable: it is built in a temporary sibling folder, ``manifest.json`` is
written last, and the folder is renamed into place. Opening never writes into it.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from . import __version__, locations
from .atomic import check_replaceable, umask_mode
from .errors import BundleError, InputError, OutputExistsError
from .progress import Progress, silent
from .source import IMAGE_SUFFIX, KeepImage, SourceData, load_source, sha256_file
from .store import Store

FORMAT_VERSION = 1
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


def file_digests(root: Path, progress: Progress = silent) -> dict[str, dict[str, Any]]:
    """relative path -> {sha256, size} for every file under ``root`` except the manifest."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() not in (MANIFEST, MANIFEST_SUM))
    out = {}
    with progress("Hashing files", len(files)) as advance:
        for path in files:
            out[path.relative_to(root).as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
            advance(1)
    return out


def _copy_images(source: SourceData, dest: Path, progress: Progress) -> None:
    dest.mkdir()
    with progress("Copying images", len(source.images)) as advance:
        for doc in source.images:
            shutil.copyfile(source.image_path(doc["image"]), dest / f"{doc['image']}{IMAGE_SUFFIX}")
            advance(1)


def _keep_pictures(ckpt: Path | None) -> tuple[dict[str, Any], KeepImage | None]:
    """A dict that validation fills with the model's picture of each image it decodes."""
    pictures: dict[str, Any] = {}
    if ckpt is None:
        return pictures, None
    from .model import input_size
    from .model.preprocess import picture_of

    size = input_size(ckpt)
    return pictures, lambda name, im: pictures.__setitem__(name, picture_of(im, size))


def _add_model(tmp: Path, source: SourceData, ckpt: Path, pictures: dict[str, Any],
               progress: Progress) -> dict[str, Any]:
    """Copy the checkpoint and embed every image with it (from the pictures validation kept)."""
    from . import model

    shutil.copytree(ckpt, tmp / MODEL_DIR)
    images = [(d["image"], tmp / IMAGE_DIR / f"{d['image']}{IMAGE_SUFFIX}") for d in source.images]
    info = model.write_embeddings(tmp / MODEL_DIR, images, tmp / EMBEDDINGS_DIR, progress, pictures)
    return {"checkpoint": MODEL_DIR, "embeddings": EMBEDDINGS_DIR, **info}


def _checkpoint_for_build(model_dir: Path | None) -> Path:
    """The checkpoint a build copies: ``model_dir``, else the shipped one; an error naming the rule when there is none."""
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
    model but no checkpoint to be found fails before it writes anything.
    """
    from .export import write_parquet

    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} already exists (use --force to replace it)")
    src, target = Path(source_dir).resolve(), out.resolve()
    if target == src or target in src.parents or src in target.parents:  # --force would delete the source
        raise InputError(f"refusing to build into {out}: it overlaps the source folder {source_dir}")
    check_replaceable(out, MANIFEST)
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
        raise InputError(f"output folder's parent does not exist: {parent}")
    for stale in parent.glob(f"{_TMP_PREFIX}*"):
        if stale.is_dir() and _owner_gone(stale):
            shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise InputError(f"cannot write in {parent}: {exc.strerror}") from None
    try:
        os.chmod(tmp, umask_mode())  # mkdtemp's 0700 would hide the bundle from other users
        started = time.perf_counter()
        store = Store.open_mongita(tmp / STORE_DIR, writable=True)
        try:
            with progress("Writing store", 1) as advance:
                counts = store.load(source)
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
        _copy_images(source, tmp / IMAGE_DIR, progress)
        model_info = _add_model(tmp, source, ckpt, pictures, progress) if ckpt else None
        manifest = {
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
        (tmp / MANIFEST_SUM).write_text(f"{sha256_file(tmp / MANIFEST)}  {MANIFEST}\n")
        _fsync_dir(tmp)
        _replace_dir(tmp, out)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _owner_gone(tmp: Path) -> bool:
    """A stale build folder is one whose building process no longer runs."""
    try:
        pid = int(tmp.name[len(_TMP_PREFIX):].split("-", 1)[0])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return True
    except PermissionError:
        return False
    return False


def _replace_dir(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is moved aside first, then removed."""
    if out.exists():
        old = out.with_name(f"{_TMP_PREFIX}{os.getpid()}-old-{out.name}")
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(root: Path) -> dict[str, Any]:
    """The bundle's manifest; a clear error when it is missing or unreadable."""
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise BundleError(f"bundle not found: {root}")
    if not path.is_file():
        raise BundleError(f"{root} is not a complete bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is unreadable: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BundleError(f"{path} is not a bundle manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{root} has bundle format {manifest.get('format_version')!r}; this version reads {FORMAT_VERSION}")
    return manifest


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
        return [f"missing: {p}" for p in self.missing] + [f"added: {p}" for p in self.added] + [f"changed: {p}" for p in self.changed]


def verify_bundle(root: Path, progress: Progress = silent) -> VerifyReport:
    """Recheck every digest of the manifest against the files on disk."""
    root = Path(root)
    try:
        manifest = read_manifest(root)
    except BundleError as exc:
        if (root / MANIFEST).exists():
            return VerifyReport(changed=[MANIFEST])
        raise exc
    expected: dict[str, Any] = manifest["files"]
    present = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    present.pop(MANIFEST, None)
    report = VerifyReport()
    sum_file = present.pop(MANIFEST_SUM, None)
    if sum_file is None:
        report.missing.append(MANIFEST_SUM)
    else:
        digest = sha256_file(root / MANIFEST)
        if sum_file.read_text(errors="replace").split(" ")[0] != digest:
            report.changed.append(MANIFEST)
        elif sum_file.read_bytes() != f"{digest}  {MANIFEST}\n".encode():  # the digest holds, the rest was edited
            report.changed.append(MANIFEST_SUM)
    report.missing += sorted(set(expected) - set(present))
    report.added = sorted(set(present) - set(expected))
    with progress("Verifying", len(expected)) as advance:
        for rel in sorted(set(expected) & set(present)):
            entry = expected[rel]
            path = present[rel]
            if not isinstance(entry, dict) or path.stat().st_size != entry.get("size") or sha256_file(path) != entry.get("sha256"):
                report.changed.append(rel)
            report.checked += 1
            advance(1)
    return report


class Bundle:
    """An opened, read-only bundle."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root = Path(root)
        self.manifest = manifest

    @property
    def parquet_dir(self) -> Path:
        return self.root / PARQUET_DIR

    @property
    def model_dir(self) -> Path:
        return self.root / MODEL_DIR

    @property
    def embeddings_dir(self) -> Path:
        return self.root / EMBEDDINGS_DIR

    def image_path(self, name: str) -> Path:
        """The PNG of an image (names are plain ids, checked at build time)."""
        return self.root / IMAGE_DIR / f"{name}{IMAGE_SUFFIX}"

    @cached_property
    def store(self) -> Store:
        return Store.open_mongita(self.root / STORE_DIR, search_index=self.root / SEARCH_FILE)

    def split_of(self, uid: str) -> str | None:
        return self.store.split_of(uid)

    def images(self) -> list[dict[str, Any]]:
        """Every image document, in id order."""
        return self.store.find("Image_Descriptions")

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()
            del self.__dict__["store"]

    def info(self) -> dict[str, Any]:
        """Counts, versions and provenance, without the per-file digests."""
        info = {k: v for k, v in self.manifest.items() if k != "files"}
        info["path"] = str(self.root)
        info["files"] = len(self.manifest["files"])
        info["bytes"] = sum(int(e.get("size", 0)) for e in self.manifest["files"].values())
        return info


def open_bundle(path: Path | str) -> Bundle:
    """Open a bundle folder, or an archive made by :func:`pack_bundle` (extracted once, verified)."""
    path = Path(path)
    if path.is_file():
        path = _unpack_cached(path)
    return Bundle(path, read_manifest(path))


def resolve_bundle(path: Path | str | None = None, progress: Progress = silent,
                   source: Path | str | None = None) -> Bundle:
    """``path``, else the default bundle (:func:`.locations.default_bundle`), built on first use
    from ``source``, else the default source (:func:`.locations.default_source`)."""
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
        build_bundle(src.path, root, force=root.exists(), progress=progress, parents=True)
    return open_bundle(root)


# -- archives -----------------------------------------------------------------------

def pack_bundle(root: Path, archive: Path, *, force: bool = False, progress: Progress = silent) -> Path:
    """Write a verified bundle as one uncompressed tar (PNG and Parquet are compressed already)."""
    root, archive = Path(root), Path(archive)
    report = verify_bundle(root)
    if not report.ok:
        raise BundleError(f"{root} does not verify; refusing to pack it ({'; '.join(report.lines()[:5])})")
    if archive.exists() and not force:
        raise OutputExistsError(f"{archive} already exists (use --force to replace it)")
    if not archive.parent.is_dir():
        raise InputError(f"folder does not exist: {archive.parent}")
    files = [MANIFEST, MANIFEST_SUM, *sorted(read_manifest(root)["files"])]
    tmp = archive.with_name(f".{archive.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar, progress("Packing", len(files)) as advance:
            for rel in files:
                tar.add(root / rel, arcname=f"{DEFAULT_NAME}/{rel}", recursive=False)
                advance(1)
        os.replace(tmp, archive)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {archive}: {exc.strerror}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return archive


def cache_dir() -> Path:
    """Where archives are unpacked (see :func:`.locations.cache_dir`)."""
    return locations.cache_dir().require()


def _unpack_cached(archive: Path) -> Path:
    """Extract an archive once per (size, mtime) and verify it; refuse a damaged one."""
    st = archive.stat()
    key = f"{archive.stem}-{st.st_size}-{st.st_mtime_ns}"
    target = cache_dir() / key
    root = target / DEFAULT_NAME
    if (target / ".verified").exists():
        return root
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=cache_dir()))
    try:
        try:
            with tarfile.open(archive, "r:") as tar:
                for member in tar.getmembers():
                    if not (member.isfile() or member.isdir()) or not member.name.startswith(f"{DEFAULT_NAME}/"):
                        raise BundleError(f"{archive} is not a bundle archive (unexpected entry {member.name!r})")
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BundleError(f"{archive} is damaged or not a bundle archive ({exc})") from None
        report = verify_bundle(tmp / DEFAULT_NAME)
        if not report.ok:
            raise BundleError(f"{archive} does not verify: {'; '.join(report.lines()[:5])}")
        (tmp / ".verified").write_text("ok\n")
        try:
            os.rename(tmp, target)
        except OSError:  # another process unpacked it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
