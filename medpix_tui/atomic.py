"""Write files and folders so that a reader sees the old version or the new one, never half.

Everything is written under a temporary name in the destination's folder, flushed, then
renamed into place; an existing destination is replaced only with ``force``, and a
folder only when this tool wrote it (it holds the tool's mark file), so a mistyped
``--out ~ --force`` cannot delete somebody's folder. A destination that is a FIFO, a device
or a socket is refused, never replaced, and so is one overlapping a folder marked
read-only for this process (:func:`mark_read_only`: every opened bundle).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import InputError, OutputExistsError

#: The file every exported folder carries, so ``--force`` knows the folder is ours to replace.
EXPORT_MARK = ".medpix-export"


def umask_mode(mode: int = 0o777) -> int:
    """``mode`` less the process umask: what ``open``/``mkdir`` would give (mkstemp/mkdtemp give 0600/0700)."""
    mask = os.umask(0o22)
    os.umask(mask)
    return mode & ~mask


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs, so that its staging folder is not taken for a leftover."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    return True


_READ_ONLY: set[Path] = set()
_READ_ONLY_LOCK = threading.Lock()


def mark_read_only(folder: Path) -> None:
    """Refuse, for the rest of this process, every save inside ``folder`` or over a folder holding it."""
    with _READ_ONLY_LOCK:
        _READ_ONLY.add(Path(folder).resolve())


def check_not_read_only(path: Path) -> None:
    """Refuse a destination that overlaps a folder marked with :func:`mark_read_only` (an opened bundle)."""
    target = Path(path).resolve()
    with _READ_ONLY_LOCK:
        roots = sorted(_READ_ONLY)
    for root in roots:
        if target == root or root in target.parents or target in root.parents:
            raise InputError(f"refusing to write {path}: it overlaps the bundle {root}, which is read-only")


def no_folder_message(folder: Path) -> str:
    """Why ``folder``, which is no folder, cannot be written in: it is missing, or it (or a folder
    above it) is a file, which "does not exist" would misname."""
    folder = Path(folder)
    for above in (folder, *folder.parents):
        if above.exists() or above.is_symlink():
            if not above.is_dir():
                return f"not a folder: {above} is a file" + (f" (in the path {folder})" if above != folder else "")
            break
    return f"folder does not exist: {folder}"


def check_destination(path: Path, force: bool) -> None:
    """Refuse a destination that exists (without ``force``), is no file or folder, or whose folder is missing."""
    path = Path(path)
    check_not_read_only(path)  # an open bundle is never written into (a file there fails its verify)
    try:
        mode = path.lstat().st_mode
    except OSError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        raise InputError(f"refusing to write {path}: it is a device, FIFO or socket, not a file")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists (use --force to overwrite)", path)
    if not path.parent.is_dir():
        raise InputError(no_folder_message(path.parent))
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"folder is not writable: {path.parent}")


#: ``why_not(path)``: why an existing ``path`` is not this writer's to replace (None: it is).
Replaceable = Callable[[Path], "str | None"]


def check_owned(path: Path, ours: Replaceable | None) -> None:
    """Refuse, even with ``force`` and before any "replace it?" question, an existing ``path`` that
    ``ours`` says is not what this writer wrote (another export's manifest, somebody's file)."""
    try:
        mode = Path(path).lstat().st_mode
    except OSError:
        return
    if ours is None or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
        return  # nothing there, or a FIFO or device: check_destination refuses it as such
    why = ours(Path(path))
    if why:
        raise InputError(f"refusing to replace {path}: {why}; remove it yourself or choose another place")


def check_file_destination(path: Path, force: bool, ours: Replaceable | None = None, *, suffix: str = "") -> None:
    """:func:`check_destination` for a file: a folder in its place is refused even with ``force``,
    before any "replace it?" question (a file never replaces a folder), and so is a file
    ``ours`` disowns. ``suffix`` is the file's kind, for the example name a folder gets."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        example = path / ("results" + (suffix or path.suffix))
        raise InputError(f"{path} is a folder: name a file to write, e.g. {example}")
    check_owned(path, ours)
    check_destination(path, force)


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
                         "remove it yourself or choose another place")


def _own_prefix(path: Path) -> str:
    """The hidden name's start of this process's temporaries for ``path``: ``.NAME.PID.``."""
    return f".{path.name}.{os.getpid()}."


def remove_stale_beside(path: Path) -> list[Path]:
    """Remove the temporaries for ``path`` that a killed process left beside it (``.NAME.PID.*.tmp``
    with PID no longer running): a SIGKILLed export left a hidden folder of its size behind."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\..*\.tmp")
    return remove_left_by_dead(path.parent, lambda name: bool(pattern.fullmatch(name)),
                               lambda name: int(pattern.fullmatch(name)[1]))  # type: ignore[index]


def remove_left_by_dead(folder: Path, ours: Callable[[str], bool], pid_of: Callable[[str], int | None]) -> list[Path]:
    """Remove the entries of ``folder`` named ``ours`` whose process (``pid_of``; None: unknown, so
    gone) no longer runs: what killed processes left (exports, builds, packs)."""
    removed = []
    with contextlib.suppress(OSError):
        for stale in Path(folder).iterdir():
            if not ours(stale.name):
                continue
            pid = pid_of(stale.name)
            if pid is not None and (pid == os.getpid() or pid_alive(pid)):
                continue
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    stale.unlink()
            removed.append(stale)
    return removed


def temp_file_beside(path: Path, *, prefix: str | None = None) -> Path:
    """A new empty file in ``path``'s folder, with a hidden temporary name and the mode ``open`` would give."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=prefix or _own_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    os.chmod(name, umask_mode(0o666))
    return Path(name)


def temp_dir_beside(path: Path, *, prefix: str | None = None) -> Path:
    """A new empty folder in ``path``'s folder, with a hidden temporary name and the mode ``mkdir`` would give."""
    path = Path(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=prefix or _own_prefix(path), suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise InputError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    os.chmod(tmp, umask_mode())  # mkdtemp's 0700 would hide the result from other users
    return tmp


def move_into_place(tmp: Path, path: Path) -> None:
    """Flush the written file ``tmp`` to disk and rename it to ``path`` (replacing a file there)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rename_flushed(tmp: Path, path: Path) -> None:
    """Rename ``tmp``, already flushed through the descriptor that wrote it, to ``path`` (replacing a
    file there): :func:`move_into_place` without its reopening by name (add-case writes its
    temporaries with O_NOFOLLOW and never opens them by name again)."""
    os.replace(tmp, path)


def replace_dir(tmp: Path, path: Path, *, aside_prefix: str | None = None) -> None:
    """Rename the filled folder ``tmp`` to ``path``; an existing ``path`` is moved aside first, then removed.

    If the second rename fails, the old folder goes back, so ``path`` is never left missing.
    ``aside_prefix`` names the folder it waits in (so that a caller's clean-up finds one a crash left).
    """
    tmp, path = Path(tmp), Path(path)
    if not path.exists():
        os.rename(tmp, path)
        return
    aside = temp_dir_beside(path, prefix=aside_prefix)
    old = aside / "old"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except OSError:
        os.rename(old, path)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def publish_dir(tmp: Path, path: Path) -> bool:
    """Rename the filled folder ``tmp`` to a ``path`` that does not exist; False (and ``tmp`` removed) when
    another process published one first."""
    try:
        os.rename(tmp, path)
    except OSError:
        if not Path(path).is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def point_link(path: Path, target_name: str, *, prefix: str) -> None:
    """Make ``path`` a symlink to ``target_name`` (a sibling) with one rename, so readers see the old
    target or the new one; a plain folder at ``path`` (an older layout) is moved aside and removed."""
    path = Path(path)
    link = path.with_name(f"{prefix}link-{path.name}")
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    os.symlink(target_name, link)
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f"{prefix}old-{path.name}")
        os.rename(path, old)
        os.replace(link, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(link, path)


def move_aside(path: Path, *, prefix: str) -> Path:
    """Rename ``path`` to a sibling named for removal (so a reader that resolves it later finds it gone)."""
    aside = Path(path).with_name(f"{prefix}old-{Path(path).name.lstrip('.')}")
    os.rename(path, aside)
    return aside


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace a file this tool owns (a manifest, a cache entry) with ``data``, all or nothing."""
    path = Path(path)
    tmp = temp_file_beside(path)
    try:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        move_into_place(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def moved_into_place(tmp: Path, path: Path, *, note: str = "") -> Iterator[Path]:
    """Yield ``tmp`` to write, then move it to ``path``; on failure remove it, an OSError as one line.

    ``note`` ends that line (e.g. " (nothing was written)").
    """
    try:
        yield tmp
        move_into_place(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}{note}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_file(path: Path, *, force: bool = False, mode: str = "wb",
                ours: Replaceable | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to ``path`` when the block succeeds.

    ``ours`` (see :func:`check_owned`) says which existing files ``force`` may replace."""
    path = Path(path)
    check_file_destination(path, force, ours)
    remove_stale_beside(path)
    with moved_into_place(temp_file_beside(path), path) as tmp:
        yield tmp
        check_file_destination(path, force, ours)  # again: a file another process wrote meanwhile stays unless forced


def try_write_json(path: Path, data: object) -> bool:
    """Write ``data`` as JSON to ``path`` atomically, making its folder; False when it cannot be.

    For files kept only to help (a remembered state, a kept first page): failing to write one
    is no reason to stop, so the caller learns of it rather than getting an error.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, force=True) as tmp:
            tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    except (OSError, InputError):
        return False
    return True


@contextlib.contextmanager
def atomic_dir(path: Path, *, force: bool = False, mark: str = EXPORT_MARK,
               ours: Replaceable | None = None) -> Iterator[Path]:
    """Yield a temporary folder to fill; rename it to ``path`` when the block succeeds.

    The folder gets the empty ``mark`` file; an existing ``path`` is replaced only if it has one
    (or is empty) and ``ours`` (see :func:`check_owned`) does not disown it.
    """
    path = Path(path)
    check_destination(path, force)
    check_replaceable(path, mark)
    check_owned(path, ours)
    remove_stale_beside(path)
    tmp = temp_dir_beside(path)
    try:
        (tmp / mark).touch()
        yield tmp
        # again at the end: a folder another process made meanwhile is never replaced unasked
        check_destination(path, force)
        check_replaceable(path, mark)
        check_owned(path, ours)
        replace_dir(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
