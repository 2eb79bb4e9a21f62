"""Dovecot's passwd-file: `user:password:uid:gid:gecos:home:shell:extra_fields`.

Only the first field is required. Blank lines and lines starting with `#` are skipped. The
file is re-read when it changes (checked with a stat at a lookup, at most a second after the
last check), so users can be added and passwords changed without a restart. A line that
cannot be used is logged by number, never by content (it holds a hash), and skipped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path

from ..quota import quota_from_extra_fields
from .base import AuthUnavailable, SchemeCensus, UserEntry
from .passwd_edit import add_user, delete_user, set_password
from .schemes import StoredPassword, UnknownScheme, hash_argon2id

log = logging.getLogger("pop3d.auth")

# A lookup may answer from memory for this long after the file was last checked: a password
# changed in the file applies within a second.
FRESH_FOR = 1.0


def parse_passwd_line(line: str) -> UserEntry:
    """One non-comment line; raises ValueError saying what is wrong with it."""
    fields = line.split(":")
    name = fields[0]
    if not name:
        raise ValueError("empty user name")
    password = StoredPassword.parse(fields[1]) if len(fields) > 1 and fields[1] else None
    home = fields[5] if len(fields) > 5 and fields[5] else None
    # Extra fields may hold colons themselves (quota rules do): they are all the rest.
    extra = dict(f.partition("=")[::2] for f in ":".join(fields[7:]).split())
    return UserEntry(name, password, home, quota_from_extra_fields(extra))


class PasswdFile:
    def __init__(self, path: Path, new_file_group: int | None = None) -> None:
        self.path = path
        self._new_file_group = new_file_group  # the group a file made by `add` gets
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._users: dict[str, UserEntry] = {}
        self._dummy: StoredPassword | None = None
        self._census = SchemeCensus()
        self._checked = float("-inf")  # when the file was last compared with what we hold

    def lookup(self, name: str) -> UserEntry | None:
        return self._current().get(name)

    def recent(self, name: str) -> tuple[UserEntry | None, StoredPassword] | None:
        if time.monotonic() - self._checked > FRESH_FOR or self._dummy is None:
            return None
        return self._users.get(name), self._dummy

    def users(self) -> list[UserEntry]:
        return list(self._current().values())

    def timing_dummy(self) -> StoredPassword:
        self._current()
        with self._lock:
            if self._dummy is None:
                self._dummy = StoredPassword.parse(hash_argon2id(os.urandom(16)))
            return self._dummy

    def census(self) -> SchemeCensus:
        self._current()
        return self._census

    # ---- editing (pop3d user add|passwd|delete): see passwd_edit ---------------------------

    def add(self, name: str, password_field: str) -> None:
        add_user(self.path, name, password_field, self._new_file_group)

    def set_password(self, name: str, password_field: str) -> None:
        set_password(self.path, name, password_field)

    def delete(self, name: str) -> None:
        delete_user(self.path, name)

    def check(self) -> int:
        """Load the file now (for start-up checks); the number of users."""
        return len(self._current())

    def _current(self) -> dict[str, UserEntry]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise AuthUnavailable(f"cannot read passwd-file {self.path}: {exc}") from exc
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if signature != self._signature:
                self._users = self._load()
                self._dummy = _pick_dummy(self._users)
                self._census = SchemeCensus.of(self._users.values())
                self._signature = signature
            self._checked = time.monotonic()
            return self._users

    def _load(self) -> dict[str, UserEntry]:
        try:
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError as exc:
            raise AuthUnavailable(f"cannot read passwd-file {self.path}: {exc}") from exc
        users: dict[str, UserEntry] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                entry = parse_passwd_line(line)
            except (ValueError, UnknownScheme) as exc:
                log.warning("%s line %d skipped: %s", self.path, number, exc)
                continue
            if entry.name in users:
                log.warning("%s line %d skipped: user %s repeated", self.path, number, entry.name)
                continue
            users[entry.name] = entry
        log.info("loaded %d users from %s", len(users), self.path)
        return users


def _pick_dummy(users: dict[str, UserEntry]) -> StoredPassword | None:
    """The first password of the most common scheme stands in for unknown users."""
    passwords = [u.password for u in users.values() if u.password is not None]
    if not passwords:
        return None
    common = Counter(p.scheme for p in passwords).most_common(1)[0][0]
    return next(p for p in passwords if p.scheme == common)
