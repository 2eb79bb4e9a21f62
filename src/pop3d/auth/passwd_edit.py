"""Editing a passwd-file safely: one editor at a time, and never a half-written file.

An edit takes an exclusive lock on `<file>.lock` (so two admins wait for each other), reads the
lines, lets the caller change them, writes a temporary file beside the original, fsyncs it and
renames it over the original. Readers (a running pop3d) see the old file or the new one.
Lines the edit does not touch, comments included, stay as they were.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..atomic import replace_file
from .base import UserEditError


class PasswdEditError(UserEditError):
    pass


def user_of(line: str) -> str | None:
    if not line.strip() or line.lstrip().startswith("#"):
        return None
    return line.split(":", 1)[0]


@contextlib.contextmanager
def editing(path: Path, new_group: int | None = None) -> Iterator[list[str]]:
    """The lines of `path` to change; the file keeps its owner, group and mode. A file made
    here is 0600, or 0640 in `new_group` (the server's, so that it can read it)."""
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            lines = path.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
            st = path.stat()
            mode, owner = st.st_mode & 0o777, (st.st_uid, st.st_gid)
        except FileNotFoundError:
            lines = []
            mode = 0o600 if new_group is None else 0o640
            owner = (os.geteuid(), new_group if new_group is not None else os.getegid())
        yield lines
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        text = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
        replace_file(path, tmp, mode, owner, lambda f: f.write(text))


def find(lines: list[str], user: str) -> int | None:
    return next((i for i, line in enumerate(lines) if user_of(line) == user), None)


def add_user(path: Path, user: str, password_field: str, new_group: int | None = None) -> None:
    with editing(path, new_group) as lines:
        if find(lines, user) is not None:
            raise PasswdEditError(f"user {user} already exists")
        lines.append(f"{user}:{password_field}::::::")


def set_password(path: Path, user: str, password_field: str) -> None:
    with editing(path) as lines:
        index = find(lines, user)
        if index is None:
            raise PasswdEditError(f"no user {user}")
        fields = lines[index].split(":")
        fields[1:2] = [password_field]
        lines[index] = ":".join(fields)


def delete_user(path: Path, user: str) -> None:
    with editing(path) as lines:
        index = find(lines, user)
        if index is None:
            raise PasswdEditError(f"no user {user}")
        del lines[index]
