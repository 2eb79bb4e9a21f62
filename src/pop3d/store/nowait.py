"""Reading a small file on the event loop, only when the kernel promises not to wait for a disk.

openat2(2) with RESOLVE_CACHED fails with EAGAIN unless every component of the path is in the
dentry cache, and preadv2(2) with RWF_NOWAIT returns at once with what the page cache holds.
Together they read a recently listed message in a few microseconds without blocking, where a
trip to the thread pool costs a hand-off of the GIL per system call. Whenever the kernel would
have to wait, or lacks these calls (Linux before 5.12, other systems), `read_file` returns None
and the caller goes to the pool as before.

The calls are made from C (`_nowait.c`) where that module was built, else through ctypes:
the same calls, with about 10 microseconds of Python and ctypes around them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from collections.abc import Callable

LIMIT = 256 * 1024  # larger files are streamed from the pool

_SYS_OPENAT2 = 437  # calls added since Linux 5.1 share one number on all but alpha
_AT_FDCWD = -100
_RESOLVE_CACHED = 0x20


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_HOW_SIZE = ctypes.sizeof(_OpenHow)


def _openat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux") or not hasattr(os, "RWF_NOWAIT"):
        return None
    if os.uname().machine == "alpha":
        return None
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                        ctypes.c_size_t]  # fmt: skip
    # Probe once: ENOSYS (old kernel, seccomp) or EINVAL (no RESOLVE_CACHED) turn it off.
    how = _OpenHow(os.O_RDONLY | os.O_CLOEXEC, 0, _RESOLVE_CACHED)
    fd = syscall(_SYS_OPENAT2, _AT_FDCWD, b"/", ctypes.byref(how), _HOW_SIZE)
    if fd < 0 and ctypes.get_errno() != errno.EAGAIN:
        return None
    if fd >= 0:
        os.close(fd)
    return syscall


_syscall = _openat2()


def read_with_ctypes(path: str) -> bytes | bytearray | None:
    """`read_file` where the C module is missing. The bytes come as the bytearray they were
    read into: copying them again would cost more than the read."""
    fd = open_with_ctypes(path, os.O_RDONLY)
    if fd is None:
        return None
    try:
        st = os.fstat(fd)
        if st.st_size > LIMIT or not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size
        # One octet more than the size: a file that grew is not taken for complete.
        data = bytearray(size + 1)
        try:
            got = os.preadv(fd, [data], 0, os.RWF_NOWAIT)
        except OSError:  # EAGAIN: not in the page cache; EOPNOTSUPP: not on this filesystem
            return None
        if got != size:  # a short count is all the page cache had, not the end of the file
            return None
        del data[size:]
        return data
    finally:
        os.close(fd)


def open_with_ctypes(path: str, flags: int) -> int | None:
    """`open_file` where the C module is missing."""
    if flags & (os.O_CREAT | os.O_TRUNC):
        raise ValueError("open_file cannot create or truncate")
    if _syscall is None:
        return None
    # O_NONBLOCK: a FIFO someone put in a Maildir would otherwise block the open itself.
    # openat2 refuses it with O_PATH, which opens nothing to block on.
    if not flags & os.O_PATH:
        flags |= os.O_NONBLOCK
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_CACHED)
    fd = _syscall(_SYS_OPENAT2, _AT_FDCWD, os.fsencode(path), ctypes.byref(how), _HOW_SIZE)
    return fd if fd >= 0 else None


def read_in_c(path: str) -> bytes | bytearray | None:
    """`read_file` through `_nowait.c`."""
    assert _read_cached is not None
    return _read_cached(path, LIMIT)


def _no_read(path: str) -> None:
    return None


def _no_open(path: str, flags: int) -> None:
    return None


_read_cached: Callable[[str, int], bytes | None] | None
_open_cached: Callable[[str, int], int | None] | None
_probe: Callable[[], bool] | None
try:
    from ._nowait import open_cached as _open_cached
    from ._nowait import probe as _probe
    from ._nowait import read_cached as _read_cached
except ImportError:  # built without a C compiler, or not on Linux
    _read_cached = _open_cached = _probe = None

read_file: Callable[[str], bytes | bytearray | None]
"""The whole file if the kernel has it at hand and it is at most LIMIT octets, else None (also
for a file that is missing or not a regular file: the caller's slow path finds out why)."""
open_file: Callable[[str, int], int | None]
"""A descriptor for the path opened with `flags` (and O_CLOEXEC, and O_NONBLOCK unless O_PATH) if
the kernel has its path at hand, else None (also when it is missing). Never creates: that may
wait."""
if _probe is not None and _open_cached is not None and _probe():
    read_file, open_file = read_in_c, _open_cached
elif _syscall is not None:
    read_file, open_file = read_with_ctypes, open_with_ctypes
else:
    read_file, open_file = _no_read, _no_open
AVAILABLE = read_file is not _no_read


def stat_now(path: str) -> os.stat_result | None:
    """The path's stat if the kernel has it at hand, else None. An O_PATH descriptor reaches
    the inode the cached dentry holds in memory: its fstat reads no disk."""
    fd = open_file(path, os.O_PATH)
    if fd is None:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)
