"""Why a path given as an input file, or as an output, is not one, in one line, before anything heavy loads."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import InputError


def check_file(path: Path) -> None:
    """InputError, saying why, unless ``path`` is a regular file (or a link to one): a link
    loop or a broken link is named as such, not "no such file"."""
    if path.is_file():
        return
    if path.is_symlink():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise InputError(f"{path}: a symbolic link loop, not a file") from None
            raise InputError(f"{path}: a broken symbolic link (to {os.readlink(path)})") from None
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    if path.exists():
        raise InputError(f"{path}: not a regular file")
    raise InputError(f"{path}: no such file")


def output_problem(value: str) -> str | None:
    """Why ``value`` names no output, or None: an empty path (``Path('')`` is ``.``, which read as
    "is a folder" or ". already exists") or ``-`` (nothing here writes its files to standard output:
    each gets a manifest, or is a folder), which would write a file named ``-``."""
    if not value.strip():
        return "is empty: an empty path names no file or folder to write"
    if value == "-":
        return "-: writing to standard output is not supported here; name a file or folder to write"
    return None
