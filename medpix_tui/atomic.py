"""Write files and folders so that a reader sees the old version or the new one, never half.

Everything is written under a temporary name in the destination's folder, flushed, then
renamed into place; an existing destination is replaced only with ``force``, and a
folder only when this tool wrote it (it holds the tool's mark file), so a mistyped
``--out ~ --force`` cannot delete somebody's folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError, OutputExistsError

#: The file every exported folder carries, so ``--force`` knows the folder is ours to replace.
EXPORT_MARK = ".medpix-export"


def umask_mode(mode: int = 0o777) -> int:
    """``mode`` less the process umask: what ``open``/``mkdir`` would give (mkstemp/mkdtemp give 0600/0700)."""
    mask = os.umask(0o22)
    os.umask(mask)
    return mode & ~mask


def check_destination(path: Path, force: bool) -> None:
    """Refuse a destination that exists (without ``force``) or whose folder is missing."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists (use --force to overwrite)")
    if not path.parent.is_dir():
        raise InputError(f"folder does not exist: {path.parent}")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"folder is not writable: {path.parent}")


def check_replaceable(path: Path, mark: str) -> None:
    """Refuse to replace an existing ``path`` unless it is an empty folder or one holding ``mark``."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise InputError(f"refusing to replace {path}: it is not a folder this tool wrote; remove it yourself")
    try:
        ours = (path / mark).is_file() or not any(path.iterdir())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not ours:
        raise InputError(f"refusing to replace {path}: it is not a folder this tool wrote (no {mark}); "
                         "remove it yourself or choose another --out")


@contextlib.contextmanager
def atomic_file(path: Path, *, force: bool = False, mode: str = "wb") -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` when the block succeeds."""
    path = Path(path)
    check_destination(path, force)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, umask_mode(0o666))
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; rename it to ``path`` when the block succeeds.

    The folder gets the empty :data:`EXPORT_MARK` file; an existing ``path`` is replaced only if it has one.
    """
    path = Path(path)
    check_destination(path, force)
    check_replaceable(path, EXPORT_MARK)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise InputError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    try:
        os.chmod(tmp, umask_mode())
        (tmp / EXPORT_MARK).touch()
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rename(path, old / "x")
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
