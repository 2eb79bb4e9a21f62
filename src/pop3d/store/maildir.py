"""Maildir backend: the layout Postfix, Exim, Courier and Dovecot write (cr.yp.to/proto/maildir).

A message file is `new/<unique>` or `cur/<unique>:2,<flags>`; other programs may move it from
new/ to cur/ or change its flags at any time, so a message is known by its unique part (`base`)
and found again by it when its file name has changed. Nothing here ever writes a message file:
the only change to mail is the unlink at UPDATE.

Files of our own in the Maildir root: `pop3d-lock` (flock'ed by the session holding the
maildrop, released by the kernel if the process dies) and `pop3d-sizes` (wire sizes computed for
messages whose names carry no `,W=`, so they are read once, not at every login).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import itertools
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ..principal import Principal
from ..protocol.dotstuff import WireSizeCounter, wire_size
from ..protocol.maildrop import MessageInfo
from ..quota import Quota
from . import nowait
from .base import (
    ExpungeResult,
    MailboxStats,
    MaildropLocked,
    MessageGone,
    QuotaExceeded,
    StorePermanentError,
    StoreUnavailable,
    mail_path,
)
from .legacy_uidl import READERS, Reader

log = logging.getLogger("pop3d.store")

LOCK_FILE = "pop3d-lock"
SIZES_FILE = "pop3d-sizes"
CHUNK_SIZE = 256 * 1024
READ_AHEAD = 512 * 1024
STREAM_CHUNK = 1024 * 1024  # reads after the first, for large messages
_SUBDIRS = ("new", "cur")
_SIZE_FIELD = re.compile(r",([SW])=(\d+)")
_MICROSECONDS = re.compile(r"M(\d+)")
SNAPSHOTS_KEPT = 1000  # maildrops whose last listing is kept, to skip a rescan when unchanged

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MaildirRef:
    subdir: str  # "new" or "cur", as seen at the snapshot
    name: str  # the file name then
    base: str  # the unique part: the name without ":2,flags"


def split_name(name: str) -> str:
    """The unique part of a Maildir file name: everything before the info separator."""
    return name.partition(":")[0]


def uidl_for(base: str) -> str:
    """Our UIDL: the unique name without its size fields, so it never changes for a message.

    A unique name that is not 1..70 printable ASCII octets (RFC 1939 section 7) is hashed.
    """
    uid = _SIZE_FIELD.sub("", base) if "," in base else base
    if 0 < len(uid) <= 70 and uid.isascii() and uid.isprintable() and " " not in uid:
        return uid
    return hashlib.sha256(base.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _order_key(base: str) -> tuple[int, int, str]:
    """Delivery time: the seconds that start the unique name, then the M<microseconds> part."""
    seconds, dot, rest = base.partition(".")
    if not dot or not seconds.isdigit():
        return (0, 0, base)
    match = _MICROSECONDS.search(rest.partition(".")[0])
    return (int(seconds), int(match.group(1)) if match else 0, base)


def _known_wire_size(base: str) -> int | None:
    if ",W=" not in base:
        return None
    for field, value in _SIZE_FIELD.findall(base):
        if field == "W":
            return int(value)
    return None


def ensure_maildir(path: Path, owner: tuple[int, int] | None = None) -> None:
    """Make the Maildir and any directory above it that is missing; what is made goes to
    `owner` (uid, gid): `pop3d user add` run as root makes a Maildir the server can use."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner is not None:
        for made in [*missing, *(path / sub for sub in ("tmp", "new", "cur"))]:
            os.chown(made, *owner)


_deliveries = itertools.count()


def unique_name() -> str:
    """A new Maildir unique name: time, microseconds, pid, a counter and randomness, host."""
    now = time.time_ns()
    host = socket.gethostname().replace("/", r"\057").replace(":", r"\072").replace(",", r"\054")
    return (
        f"{now // 1_000_000_000}.M{now // 1000 % 1_000_000}P{os.getpid()}"
        f"Q{next(_deliveries)}R{secrets.token_hex(4)}.{host}"
    )


def deliver(
    path: Path, chunks: Iterable[bytes], before_commit: Callable[[int], None] | None = None
) -> str:
    """Store one message durably: write to tmp/, fsync, rename into new/ (the name carries
    ,S= and ,W= sizes so no reader ever has to measure it). Returns the file name.

    `before_commit`, given the size written, may raise to refuse the message (a quota check).
    Nothing is visible in new/ until the message is complete and on disk; on any failure the
    temporary file is removed and the error raised.
    """
    ensure_maildir(path)
    name = unique_name()
    tmp = path / "tmp" / name
    wire = WireSizeCounter()
    size = 0
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                size += len(chunk)
                wire.feed(chunk)
            f.flush()
            os.fsync(f.fileno())
        if before_commit is not None:
            before_commit(size)
        final = f"{name},S={size},W={wire.finish()}"
        os.rename(tmp, path / "new" / final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path / "new")
    return final


class MaildirStore:
    """Maildirs found through a path template with {user}, {local}, {domain} and {home}."""

    def __init__(
        self, template: str, executor: Executor | None = None, uidl_format: str = "unique"
    ) -> None:
        self.template = template
        self._executor = executor
        self._legacy = READERS[uidl_format]
        self._snapshots: OrderedDict[str, tuple[object, tuple[MessageInfo, ...]]] = OrderedDict()
        self._snapshots_lock = threading.Lock()

    def path_for(self, principal: Principal) -> Path:
        return Path(self._location(principal))

    # ---- MailSink --------------------------------------------------------------------------

    def where(self, principal: Principal) -> str:
        return f"Maildir {self.path_for(principal)}"

    def create(self, principal: Principal, owner: tuple[int, int] | None = None) -> str:
        ensure_maildir(self.path_for(principal), owner)
        return self.where(principal)

    def deliver(self, principal: Principal, chunks: Iterable[bytes], quota: Quota) -> str:
        path = self.path_for(principal)

        def check_quota(size: int) -> None:
            if quota.storage or quota.messages:
                octets, count = usage(path)
                if quota.exceeded(octets + size, count + 1):
                    raise QuotaExceeded(f"{principal.name} is over quota")

        return deliver(path, chunks, check_quota)

    def usage(self, principal: Principal) -> tuple[int, int]:
        return usage(self.path_for(principal))

    def stats(self, principal: Principal) -> MailboxStats:
        return maildir_stats(self.path_for(principal))

    def _location(self, principal: Principal) -> str:
        # A str, not a Path: parsing a Path on every login interns its parts for nothing.
        return mail_path(self.template, principal)

    async def open(self, principal: Principal) -> MaildirMaildrop:
        path = self._location(principal)
        # A returning user's maildrop is usually at hand: lock file and directories in the
        # dentry cache, listing kept. Then it opens here on the loop, without the trip to the
        # pool (a GIL hand-off per system call) that was a third of a login's CPU.
        lock = self._lock_now(path)
        if lock is None:
            return await _run(self._executor, self._open, path)
        try:
            found = [nowait.stat_now(f"{path}/{sub}") for sub in _SUBDIRS]
            stats = [st for st in found if st is not None]
            messages = self._kept_listing(path, stats) if len(stats) == len(found) else None
            if messages is None:
                messages = await _run(self._executor, self._listing, path)
        except BaseException:
            os.close(lock)
            raise
        return MaildirMaildrop(path, lock, messages, self._executor)

    def _lock_now(self, path: str) -> int | None:
        """The locked lock file if it can be had without waiting for a disk, else None."""
        lock = nowait.open_file(f"{path}/{LOCK_FILE}", os.O_RDWR)
        if lock is None:
            return None  # not cached, or a new user's: the pool opens (or makes) it
        try:
            _take_lock(lock, path)
        except MaildropLocked:
            os.close(lock)
            raise
        except OSError:  # the pool tries again and reports it
            os.close(lock)
            return None
        return lock

    def _open(self, path: str) -> MaildirMaildrop:
        lock_path = f"{path}/{LOCK_FILE}"
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
        try:
            try:
                lock = os.open(lock_path, flags, 0o600)
            except FileNotFoundError:  # a new user: make the Maildir
                ensure_maildir(Path(path))
                lock = os.open(lock_path, flags, 0o600)
        except PermissionError as exc:
            raise StorePermanentError(f"cannot open maildir {path}: {exc}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"cannot open maildir {path}: {exc}") from exc
        try:
            _take_lock(lock, path)
            messages = self._listing(path)
        except BaseException:
            os.close(lock)
            raise
        return MaildirMaildrop(path, lock, messages, self._executor)

    def _listing(self, path: str) -> Sequence[MessageInfo]:
        """The snapshot, or the last one again when neither new/ nor cur/ changed since.

        A directory's mtime moves with every file added, removed or renamed in it. A listing
        is kept only if the directories had been quiet for a second when it was taken, so a
        change in the same clock tick as the scan cannot go unnoticed.
        """
        try:
            stats = [os.stat(f"{path}/{sub}") for sub in _SUBDIRS]
        except OSError:
            return _snapshot(Path(path), self._legacy)
        kept = self._kept_listing(path, stats)
        if kept is not None:
            return kept
        messages = tuple(_snapshot(Path(path), self._legacy))
        if time.time_ns() - max(st.st_mtime_ns for st in stats) > 1_000_000_000:
            with self._snapshots_lock:
                self._snapshots[path] = (_signature(stats), messages)
                while len(self._snapshots) > SNAPSHOTS_KEPT:
                    self._snapshots.popitem(last=False)
        return messages

    def _kept_listing(
        self, path: str, stats: Sequence[os.stat_result]
    ) -> Sequence[MessageInfo] | None:
        """The kept listing if new/ and cur/ (their `stats`) are as they were when it was taken."""
        with self._snapshots_lock:
            kept = self._snapshots.get(path)
            if kept is not None and kept[0] == _signature(stats):
                self._snapshots.move_to_end(path)
                return kept[1]  # a tuple: sessions share it, nobody changes it
        return None


def _signature(stats: Sequence[os.stat_result]) -> object:
    return tuple((st.st_ino, st.st_mtime_ns) for st in stats)


def _take_lock(lock: int, path: str) -> None:
    # LOCK_NB: a maildrop in use is refused at once, never waited for.
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise MaildropLocked(f"maildir {path} is locked") from None


def usage(path: Path) -> tuple[int, int]:
    """Octets on disk and number of messages in a Maildir (sizes from ,S= where present)."""
    octets = count = 0
    for ref in _scan(path).values():
        match = re.search(r",S=(\d+)", ref.base)
        if match:
            octets += int(match.group(1))
        else:
            try:
                octets += os.stat(path / ref.subdir / ref.name).st_size
            except FileNotFoundError:
                continue
        count += 1
    return octets, count


def maildir_stats(path: Path) -> MailboxStats:
    """A look at a Maildir without taking the POP3 lock (an admin command, not a session)."""
    messages = _snapshot(path, None) if path.is_dir() else []
    times = []
    for message in messages:
        ref = message.ref
        assert isinstance(ref, MaildirRef)
        seconds = _order_key(ref.base)[0]
        if not seconds:
            with contextlib.suppress(OSError):
                seconds = int(os.stat(path / ref.subdir / ref.name).st_mtime)
        times.append(seconds)
    return MailboxStats(
        len(messages), sum(m.size for m in messages), min(times, default=None),
        max(times, default=None),
    )  # fmt: skip


def _scan(path: Path) -> dict[str, MaildirRef]:
    """Every message file in new/ and cur/, by unique part."""
    found: dict[str, MaildirRef] = {}
    for sub in _SUBDIRS:
        try:
            with os.scandir(path / sub) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or not entry.is_file():
                        continue  # a message is a regular file (or a link to one)
                    base = split_name(name)
                    found.setdefault(base, MaildirRef(sub, name, base))
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {path / sub}: {exc}") from exc
    return found


def _snapshot(path: Path, legacy_reader: Reader | None) -> list[MessageInfo]:
    legacy = legacy_reader(path) if legacy_reader else {}

    def order(ref: MaildirRef) -> tuple[int, int, int, str]:
        # What the previous server knew comes first, in its order; then ours, oldest first.
        known = legacy.get(ref.base)
        return (0, known.order, 0, "") if known else (1, *_order_key(ref.base))

    refs = sorted(_scan(path).values(), key=order)
    cached = _read_sizes(path)
    computed: dict[str, int] = {}
    messages: list[MessageInfo] = []
    for ref in refs:
        size = _known_wire_size(ref.base)
        if size is None:
            size = cached.get(ref.base)
        if size is None:
            try:
                size = _measure(path / ref.subdir / ref.name)
            except FileNotFoundError:
                continue  # moved or removed while we looked: it shows up next time
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot read {path / ref.subdir / ref.name}: {exc}"
                ) from exc
            computed[ref.base] = size
        elif ref.base in cached:
            computed[ref.base] = size
        known = legacy.get(ref.base)
        messages.append(MessageInfo(known.uidl if known else uidl_for(ref.base), size, ref))
    if computed.keys() != cached.keys():
        _write_sizes(path, computed)
    return messages


def _measure(file: Path) -> int:
    # O_NONBLOCK here and in _open_ref: a FIFO in a Maildir must not hang a thread (and the
    # maildrop's lock) in open(); it reads as empty.
    fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    with open(fd, "rb") as f:
        return wire_size(iter(lambda: f.read(CHUNK_SIZE), b""))


def _read_sizes(path: Path) -> dict[str, int]:
    sizes: dict[str, int] = {}
    try:
        with open(path / SIZES_FILE, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                base, _, size = line.rstrip("\n").rpartition("\t")
                if base and size.isdigit():
                    sizes[base] = int(size)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("ignoring unreadable size cache %s: %s", path / SIZES_FILE, exc)
    return sizes


def _write_sizes(path: Path, sizes: dict[str, int]) -> None:
    tmp = path / f"{SIZES_FILE}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.writelines(f"{base}\t{size}\n" for base, size in sizes.items())
        os.replace(tmp, path / SIZES_FILE)
    except OSError as exc:
        log.warning("cannot write size cache %s: %s", path / SIZES_FILE, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


class MaildirMessageReader:
    """Chunks of one message file. A small message was read whole when it was opened."""

    __slots__ = ("_executor", "_fd", "_pending")

    def __init__(self, fd: int | None, first: bytes, executor: Executor | None) -> None:
        self._fd = fd  # None once the whole message is in hand
        self._pending: bytes | None = first
        self._executor = executor

    async def read(self) -> bytes:
        if self._pending is not None:
            chunk, self._pending = self._pending, None
            return chunk
        if self._fd is None:
            return b""
        return await _run(self._executor, os.read, self._fd, STREAM_CHUNK)

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class MaildirMaildrop:
    """A locked Maildir. Clients mostly RETR one message after another, so asking for a small
    message also reads the small ones after it (up to READ_AHEAD octets) in the same trip to
    the thread pool; the next RETR then needs no trip at all. A small message the kernel
    already caches needs no trip either: `read_now` reads it on the loop (see `nowait`)."""

    __slots__ = ("_executor", "_lock", "_messages", "_position", "_read_ahead", "path")

    def __init__(
        self, path: str, lock: int, messages: Sequence[MessageInfo], executor: Executor | None
    ) -> None:
        self.path = path  # a str: a Path per idle session costs a few hundred bytes
        self._lock: int | None = lock
        self._messages = messages
        self._executor = executor
        self._position: dict[object, int] | None = None  # made at the first read-ahead
        self._read_ahead: dict[object, bytes] = {}

    @property
    def messages(self) -> Sequence[MessageInfo]:
        return self._messages

    def read_now(self, message: MessageInfo) -> bytes | bytearray | None:
        data: bytes | bytearray | None = self._read_ahead.pop(message.ref, None)
        if data is None and message.size <= nowait.LIMIT:  # the file is no larger than that
            ref = message.ref
            assert isinstance(ref, MaildirRef)
            data = nowait.read_file(f"{self.path}/{ref.subdir}/{ref.name}")
        return data

    async def open_message(self, message: MessageInfo) -> MaildirMessageReader:
        data = self._read_ahead.pop(message.ref, None)
        if data is not None:
            return MaildirMessageReader(None, data, self._executor)
        fd, first, ahead = await _run(self._executor, self._open_message, message)
        self._read_ahead = ahead
        return MaildirMessageReader(fd, first, self._executor)

    def _open_message(self, message: MessageInfo) -> tuple[int | None, bytes, dict[object, bytes]]:
        ref = message.ref
        assert isinstance(ref, MaildirRef)
        try:
            fd, first = self._start_reading(ref)
        except FileNotFoundError:
            raise MessageGone(f"{ref.base} is no longer in {self.path}") from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {ref.base} in {self.path}: {exc}") from exc
        ahead: dict[object, bytes] = {}
        if fd is None:
            budget = READ_AHEAD
            if self._position is None:
                self._position = {m.ref: i for i, m in enumerate(self._messages)}
            for following in self._messages[self._position[ref] + 1 :]:
                if following.size > budget:
                    break
                assert isinstance(following.ref, MaildirRef)
                try:
                    next_fd, data = self._start_reading(following.ref)
                except OSError:
                    break  # it will be looked for (and reported) when it is asked for
                if next_fd is not None:
                    os.close(next_fd)
                    break
                ahead[following.ref] = data
                budget -= len(data)
        return fd, first, ahead

    def _start_reading(self, ref: MaildirRef) -> tuple[int | None, bytes]:
        """The open file and its first chunk, or (None, everything) for a small file."""
        fd = self._open_ref(ref)
        try:
            first = os.read(fd, CHUNK_SIZE)
            if len(first) < CHUNK_SIZE:  # a regular file reads short only at its end
                os.close(fd)
                return None, first
        except BaseException:
            os.close(fd)
            raise
        return fd, first

    def _open_ref(self, ref: MaildirRef) -> int:
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            return os.open(f"{self.path}/{ref.subdir}/{ref.name}", flags)
        except FileNotFoundError:
            # Another client may have moved it to cur/ or changed its flags: find it by base.
            current = _scan(Path(self.path)).get(ref.base)
            if current is None:
                raise
            return os.open(f"{self.path}/{current.subdir}/{current.name}", flags)

    async def expunge(self, messages: Sequence[MessageInfo]) -> ExpungeResult:
        return await _run(self._executor, self._expunge, messages)

    def _expunge(self, messages: Iterable[MessageInfo]) -> ExpungeResult:
        removed = vanished = failed = 0
        rescan: dict[str, MaildirRef] | None = None
        for message in messages:
            ref = message.ref
            assert isinstance(ref, MaildirRef)
            try:
                try:
                    os.unlink(f"{self.path}/{ref.subdir}/{ref.name}")
                except FileNotFoundError:
                    if rescan is None:
                        rescan = _scan(Path(self.path))
                    current = rescan.get(ref.base)
                    if current is None:
                        vanished += 1
                        continue
                    os.unlink(f"{self.path}/{current.subdir}/{current.name}")
                removed += 1
            except FileNotFoundError:
                vanished += 1
            except OSError as exc:
                failed += 1
                log.error("cannot delete %s from %s: %s", ref.base, self.path, exc)
        for sub in _SUBDIRS:
            _fsync_dir(Path(self.path, sub))
        return ExpungeResult(removed, vanished, failed)

    async def close(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)  # releases the flock; cheap enough to do on the loop

    def on_lost(self, callback: Callable[[], None]) -> None:
        """A flock is never lost while its descriptor is open."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            log.warning("cannot fsync %s: %s", path, exc)
    finally:
        os.close(fd)


async def _run(executor: Executor | None, func: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(executor, func, *args)
