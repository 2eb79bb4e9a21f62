"""Giving up root: the account pop3d serves as, and the one-way switch to it.

Started as root, pop3d does what needs root first (binding ports below 1024, reading a key
only root may read), then switches every id it has (real, effective and saved user and
group ids, and the supplementary groups of the account) and checks that root cannot be had
back. Linux clears the capabilities of a process whose user ids all leave 0, so nothing of
root is left.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import logging
import os
import pwd
import signal
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pop3d")

PR_SET_PDEATHSIG = 1


class AccountError(Exception):
    """The account named in the config does not exist (the text names the key)."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int
    group: str

    def __str__(self) -> str:
        return f"{self.name}:{self.group} (uid {self.uid}, gid {self.gid})"


def account(user: str, group: str | None = None, *, key: str = "[server] user") -> Account:
    """The account `user` (with `group`, or its primary group); AccountError names `key`."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise AccountError(f"{key}: no account {user!r} on this system") from None
    group_key = key.replace("user", "group")
    try:
        gr = grp.getgrnam(group) if group is not None else grp.getgrgid(entry.pw_gid)
    except KeyError:
        raise AccountError(f"{group_key}: no group {group!r} on this system") from None
    return Account(entry.pw_name, entry.pw_uid, gr.gr_gid, gr.gr_name)


def is_root() -> bool:
    return os.geteuid() == 0


def drop_to(target: Account) -> None:
    """Become `target` for good; raises OSError if root could still be had back."""
    os.initgroups(target.name, target.gid)
    os.setresgid(target.gid, target.gid, target.gid)
    os.setresuid(target.uid, target.uid, target.uid)
    if target.uid != 0:
        for regain in (os.setuid, os.setgid):
            try:
                regain(0)
            except PermissionError:
                continue
            raise OSError(f"{regain.__name__}(0) succeeded after giving up root")
    log.info("serving as %s", target)


def chown(path: Path | str, owner: Account | None) -> None:
    """Give what root made to `owner` (nothing to do when not root or no owner)."""
    if owner is not None and is_root():
        os.chown(path, owner.uid, owner.gid)


def readable_by(path: Path, who: Account) -> bool:
    """Whether `who` may read `path` by its mode bits (the directories above it aside)."""
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_uid == who.uid:
        return bool(st.st_mode & 0o400)
    if st.st_gid in os.getgrouplist(who.name, who.gid):
        return bool(st.st_mode & 0o040)
    return bool(st.st_mode & 0o004)


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies: a worker never outlives its supervisor
    (a `kill -9` of pop3d ends all of it, as it would a single process)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
