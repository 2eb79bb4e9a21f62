"""Replacing a file so that a crash at any moment leaves the old file or the new one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def replace_file(
    path: Path, tmp: Path, mode: int, owner: tuple[int, int], write: Callable[[BinaryIO], object]
) -> None:
    """`write` the new content into `tmp` (beside `path`), with `mode` and `owner`; fsync it,
    rename it over `path`, fsync the directory. PermissionError if `owner` cannot be given."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
        os.fchmod(fd, mode)  # not narrowed by the umask
        with os.fdopen(fd, "wb") as f:
            if owner != (os.geteuid(), os.getegid()):
                os.fchown(fd, *owner)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
