"""Why a path given as an input file is not one, in one line, before anything heavy loads."""

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
