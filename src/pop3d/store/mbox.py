"""mbox: a user's INBOX as one file, `/var/mail/USER`, as Postfix's and Exim's local agents
write it.

A message begins with a `From ` line at the start of the file or after an empty line, and
ends with the empty line before the next one. Lines of the body that would look like a
separator were quoted by the writer: `mboxo` quotes `From ` as `>From `, `mboxrd` adds a
`>` to any run of `>` before `From `; the client is sent the lines unquoted, as the format
says. `Content-Length:` is ignored: writers disagree on it, and the separators suffice.

Locks. The MTA appends under a dotlock (`USER.lock` beside the mbox) and an fcntl lock on
the file; pop3d takes both only while it reads the login snapshot and while it rewrites the
file at UPDATE, never for a whole session, so mail delivered during a session waits
seconds at most. The RFC 1939 exclusive lock for the session is a flock on a file of
pop3d's own beside the mbox (`USER.pop3d-lock`), which no MTA takes.

UPDATE writes the mbox without the deleted messages to a new file beside it (same owner and
mode), fsyncs it and renames it over the old one, under the locks, keeping whatever was
appended since the snapshot: a SIGKILL at any moment leaves the old file or the new one.
Messages are found again by UIDL at UPDATE, so a rewrite by another program (a mail
reader) between login and QUIT deletes only what is still there.

UIDL: an `X-UIDL:` header a previous server (qpopper, UW) wrote, else a hash of the
message's `From ` line and content, which do not depend on where in the file it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..atomic import replace_file
from ..principal import Principal
from ..protocol.dotstuff import WireSizeCounter
from ..protocol.maildrop import MessageInfo
from ..quota import Quota
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

READ_SIZE = 256 * 1024  # octets per read of a message; also the longest line kept whole
DOTLOCK_TIMEOUT = 30.0  # seconds to wait for the MTA's locks
DOTLOCK_STALE = 300.0  # a dotlock untouched this long was left by a dead writer
_X_UIDL = re.compile(rb"^X-UIDL:[ \t]*([\x21-\x7e]{1,70})[ \t]*\r?\n", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class MboxRef:
    start: int  # offset of the From line
    body: int  # offset of the first line after it
    end: int  # offset after the message's last line (before the separating empty line)
    from_line: bytes


@dataclass(frozen=True, slots=True)
class _Parsed:
    """An mbox as far as `length`: its messages, and each one's UIDL before a repeat's
    ordinal was added (to go on numbering when the file grows)."""

    identity: tuple[int, int]  # device and inode
    length: int
    mtime_ns: int
    messages: tuple[MessageInfo, ...]
    bases: tuple[str, ...]


def unquote(line: bytes, format: str) -> bytes:
    """A line of a message as the client gets it."""
    if format == "mboxrd":
        stripped = line.lstrip(b">")
        if stripped is not line and stripped.startswith(b"From "):
            return line[1:]
        return line
    return line[1:] if line.startswith(b">From ") else line


def quote(line: bytes, format: str) -> bytes:
    """A line of a message as it is written into the mbox."""
    if format == "mboxrd":
        return b">" + line if line.lstrip(b">").startswith(b"From ") else line
    return b">" + line if line.startswith(b"From ") else line


def _lines(f: BinaryIO, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) from `start` to `end`; a line longer than READ_SIZE comes in pieces,
    only the first of which starts at a line start."""
    f.seek(start)
    offset = start
    while offset < end:
        line = f.readline(min(READ_SIZE, end - offset))
        if not line:
            return
        yield offset, line
        offset += len(line)


@dataclass(slots=True)
class _Reading:
    """The message `parse` is in."""

    start: int
    from_line: bytes
    size: WireSizeCounter
    digest: Any
    x_uidl: str | None = None
    in_headers: bool = True

    def found(self, end: int) -> tuple[MboxRef, str | None, int, str]:
        ref = MboxRef(self.start, self.start + len(self.from_line), end, self.from_line)
        return ref, self.x_uidl, self.size.finish(), self.digest.hexdigest()


def parse(
    f: BinaryIO, format: str, start: int = 0, end: int | None = None
) -> Iterator[tuple[MboxRef, str | None, int, str]]:
    """The messages from `start` (a message's From line) to `end`: (ref, X-UIDL or None,
    wire size, content hash), in bounded memory. StorePermanentError if it is no mbox."""
    if end is None:
        end = os.fstat(f.fileno()).st_size
    current: _Reading | None = None
    previous_empty = True
    at_line_start = True
    held_empty: bytes | None = None  # an empty line: content, or the separator before a From
    held_at = 0
    for offset, line in _lines(f, start, end):
        starts_line, at_line_start = at_line_start, line.endswith(b"\n")
        if starts_line and previous_empty and line.startswith(b"From "):
            if current is not None:
                yield current.found(held_at)
            current = _Reading(offset, line, WireSizeCounter(), hashlib.sha256(line))
            held_empty, previous_empty = None, False
            continue
        if current is None:
            raise StorePermanentError("not an mbox: it does not begin with a From line")
        if held_empty is not None:  # it was not a separator
            current.size.feed(held_empty)
            current.digest.update(held_empty)
            held_empty = None
        previous_empty = starts_line and line in (b"\n", b"\r\n")
        if previous_empty:
            held_empty, held_at = line, offset
            current.in_headers = False
            continue
        if starts_line and current.in_headers and current.x_uidl is None:
            match = _X_UIDL.match(line)
            if match:
                current.x_uidl = match.group(1).decode("ascii")
        content = unquote(line, format) if starts_line else line
        current.size.feed(content)
        current.digest.update(content)
    if current is not None:
        yield current.found(held_at if held_empty is not None else end)


def _with_uidls(
    found: Iterable[tuple[MboxRef, str | None, int, str]],
    messages: list[MessageInfo], bases: list[str],
) -> None:
    """Append a MessageInfo for each parsed message. A repeated UIDL (the same message twice)
    gets its ordinal, so UIDLs stay unique and stable."""
    seen: dict[str, int] = {}
    for base in bases:
        seen[base] = seen.get(base, 0) + 1
    for ref, x_uidl, size, content in found:
        base = x_uidl or content[:40]
        count = seen.get(base, 0)
        seen[base] = count + 1
        messages.append(MessageInfo(f"{base[:60]}-{count}" if count else base, size, ref))
        bases.append(base)


# ---- the MTA's locks --------------------------------------------------------------------


@contextlib.contextmanager
def delivery_locks(path: Path, f: BinaryIO | None = None) -> Iterator[None]:
    """The dotlock `path.lock` and an fcntl lock on the open mbox `f`, as MTAs take them."""
    dotlock = path.with_name(path.name + ".lock")
    deadline = time.monotonic() + DOTLOCK_TIMEOUT
    while True:
        try:
            os.close(os.open(dotlock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            break
        except FileExistsError:
            with contextlib.suppress(OSError):
                if time.time() - dotlock.stat().st_mtime > DOTLOCK_STALE:
                    dotlock.unlink()
                    continue
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"{dotlock} is held too long") from None
            time.sleep(0.05)
        except PermissionError:
            raise StoreUnavailable(
                f"cannot make {dotlock}: the account needs write access to {path.parent}, "
                "as Debian gives the group mail"
            ) from None
    # A reader's lock keeps writers out; a file open for writing gets a writer's.
    kind = fcntl.LOCK_SH if f is not None and f.mode == "rb" else fcntl.LOCK_EX
    try:
        if f is not None:
            while True:
                try:
                    fcntl.lockf(f.fileno(), kind | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() > deadline:
                        raise StoreUnavailable(f"{path} is locked too long") from None
                    time.sleep(0.05)
        yield
    finally:
        if f is not None:
            with contextlib.suppress(OSError):
                fcntl.lockf(f.fileno(), fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            dotlock.unlink()


# ---- the store --------------------------------------------------------------------------


class MboxStore:
    """Mailstore and MailSink on mbox files at `template` (`{user}`, `{local}`, `{domain}`,
    `{home}` as for Maildir)."""

    def __init__(self, template: str, executor: Executor | None = None,
                 format: str = "mboxo") -> None:  # fmt: skip
        self.template = template
        self.format = format
        self._executor = executor
        self._parsed: dict[str, _Parsed] = {}  # by path: a login to an unchanged mbox reads nothing

    def path_for(self, principal: Principal) -> Path:
        return Path(mail_path(self.template, principal))

    # ---- Mailstore -------------------------------------------------------------------------

    async def open(self, principal: Principal) -> MboxMaildrop:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._open, self.path_for(principal))

    def _open(self, path: Path) -> MboxMaildrop:
        lock_path = path.with_name(path.name + ".pop3d-lock")
        try:
            lock = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreUnavailable(f"cannot make {lock_path}: {exc}") from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise MaildropLocked(f"{path} is in another session") from None
        try:
            parsed = self._snapshot(path)
        except BaseException:
            os.close(lock)
            raise
        return MboxMaildrop(self, path, lock, parsed)

    def _snapshot(self, path: Path) -> _Parsed:
        try:
            f = open(path, "rb")  # noqa: SIM115 - held across the locks below
        except FileNotFoundError:
            return _Parsed((0, 0), 0, 0, (), ())
        except PermissionError as exc:
            raise StorePermanentError(f"cannot read {path}: {exc}") from None
        with f, delivery_locks(path, f):
            return self._parse_kept(path, f)

    def _parse_kept(self, path: Path, f: BinaryIO) -> _Parsed:
        """The messages of `f`, reusing what was parsed of it before if it only grew."""
        st = os.fstat(f.fileno())
        identity = (st.st_dev, st.st_ino)
        kept = self._parsed.get(str(path))
        if kept and (kept.identity, kept.length, kept.mtime_ns) == (
            identity, st.st_size, st.st_mtime_ns
        ):
            return kept
        messages: list[MessageInfo] = []
        bases: list[str] = []
        start = 0
        if kept and kept.identity == identity and kept.length < st.st_size and kept.messages:
            # Appended to since: the old messages stand if the last one's From line does.
            last = kept.messages[-1].ref
            assert isinstance(last, MboxRef)
            f.seek(last.start)
            if f.read(len(last.from_line)) == last.from_line:
                messages, start = list(kept.messages[:-1]), last.start
                bases = list(kept.bases[:-1])
        _with_uidls(parse(f, self.format, start, st.st_size), messages, bases)
        parsed = _Parsed(identity, st.st_size, st.st_mtime_ns, tuple(messages), tuple(bases))
        self._parsed[str(path)] = parsed
        return parsed

    # ---- MailSink --------------------------------------------------------------------------

    def where(self, principal: Principal) -> str:
        return str(self.path_for(principal))

    def create(self, principal: Principal, owner: tuple[int, int] | None = None) -> str:
        path = self.path_for(principal)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
        finally:
            os.close(fd)
        return str(path)

    def deliver(self, principal: Principal, chunks: Iterable[bytes], quota: Quota) -> str:
        """Append one message, with a `From MAILER-DAEMON` line, quoted for the format."""
        path = self.path_for(principal)
        data = b"".join(chunks)
        if quota.storage or quota.messages:
            storage, count = self.usage(principal)
            if (quota.storage and storage + len(data) > quota.storage) or (
                quota.messages and count + 1 > quota.messages
            ):
                raise QuotaExceeded(f"{principal.name} is over quota")
        lines = data.splitlines(keepends=True)
        if lines and not lines[-1].endswith(b"\n"):
            lines[-1] += b"\n"
        stamp = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime()).encode()
        text = b"From MAILER-DAEMON " + stamp + b"\n"
        text += b"".join(quote(line, self.format) for line in lines) + b"\n"
        with open(path, "a+b") as f, delivery_locks(path, f):
            # A From line starts a message only after an empty line: make sure there is one.
            end = f.seek(0, os.SEEK_END)
            f.seek(max(0, end - 2))
            tail = f.read(2)
            if end and tail != b"\n\n":
                text = (b"\n" if tail.endswith(b"\n") else b"\n\n") + text
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return str(path)

    def usage(self, principal: Principal) -> tuple[int, int]:
        path = self.path_for(principal)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return 0, 0
        return size, len(self._snapshot(path).messages)

    def stats(self, principal: Principal) -> MailboxStats:
        path = self.path_for(principal)
        parsed = self._snapshot(path)
        sizes = sum(m.size for m in parsed.messages)
        when = path.stat().st_mtime if parsed.messages else None
        return MailboxStats(len(parsed.messages), sizes, None, when)


class MboxMessageReader:
    """One message, unquoted, READ_SIZE octets at a time, from a file of its own."""

    def __init__(self, f: BinaryIO, ref: MboxRef, format: str,
                 executor: Executor | None) -> None:  # fmt: skip
        self._f = f
        self._lines = _lines(f, ref.body, ref.end)
        self._format = format
        self._executor = executor
        self._at_line_start = True

    def read_blocking(self) -> bytes:
        out = bytearray()
        for _offset, line in self._lines:
            out += unquote(line, self._format) if self._at_line_start else line
            self._at_line_start = line.endswith(b"\n")
            if len(out) >= READ_SIZE:
                break
        return bytes(out)

    async def read(self) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.read_blocking)

    async def close(self) -> None:
        self._f.close()


class MboxMaildrop:
    def __init__(self, store: MboxStore, path: Path, lock: int, parsed: _Parsed) -> None:
        self._store = store
        self._path = path
        self._lock: int | None = lock
        self._parsed = parsed

    @property
    def messages(self) -> Sequence[MessageInfo]:
        return self._parsed.messages

    def read_now(self, message: MessageInfo) -> bytes | bytearray | None:
        return None

    async def open_message(self, message: MessageInfo) -> MboxMessageReader:
        loop = asyncio.get_running_loop()
        ref = await loop.run_in_executor(self._store._executor, self._locate, message)
        f = open(self._path, "rb")  # noqa: SIM115 - the reader closes it
        return MboxMessageReader(f, ref, self._store.format, self._store._executor)

    def _locate(self, message: MessageInfo) -> MboxRef:
        """Where the message is now: where the snapshot saw it, unless the file was
        rewritten since by someone else; then found again by UIDL."""
        ref = message.ref
        assert isinstance(ref, MboxRef)
        snapshot = self._parsed
        try:
            with open(self._path, "rb") as f:
                st = os.fstat(f.fileno())
                f.seek(ref.start)
                if (
                    (st.st_dev, st.st_ino) == snapshot.identity
                    and st.st_size >= snapshot.length  # appended to at most
                    and f.read(len(ref.from_line)) == ref.from_line
                ):
                    return ref
            now = self._store._snapshot(self._path)
        except FileNotFoundError:
            raise MessageGone(f"{self._path} is gone") from None
        for other in now.messages:
            if other.uidl == message.uidl:
                assert isinstance(other.ref, MboxRef)
                return other.ref
        raise MessageGone(f"message {message.uidl} is no longer in {self._path}")

    async def expunge(self, messages: Sequence[MessageInfo]) -> ExpungeResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._store._executor, self._expunge, messages)

    def _expunge(self, messages: Sequence[MessageInfo]) -> ExpungeResult:
        if not messages:
            return ExpungeResult(0, 0, 0)
        path = self._path
        try:
            f = open(path, "r+b")  # noqa: SIM115 - for the writer's lock; it is only read
        except FileNotFoundError:
            return ExpungeResult(0, len(messages), 0)
        with f, delivery_locks(path, f):
            now = self._store._parse_kept(path, f)
            doomed = {m.uidl for m in messages}
            keep = [m.ref for m in now.messages if m.uidl not in doomed]
            removed = len(now.messages) - len(keep)
            if removed:
                self._rewrite(f, keep, now.length)
            return ExpungeResult(removed, len(messages) - removed, 0)

    def _rewrite(self, f: BinaryIO, keep: list[object], length: int) -> None:
        """The mbox with only `keep`, and anything after `length` (appended meanwhile, though
        the locks make that unlikely), to a new file renamed over the old one."""
        path = self._path
        st = os.fstat(f.fileno())

        def write(out: BinaryIO) -> None:
            for ref in keep:
                assert isinstance(ref, MboxRef)
                _copy(f, out, ref.start, ref.end)
                out.write(b"\n")
            _copy(f, out, length, os.fstat(f.fileno()).st_size)

        try:
            replace_file(path, path.with_name(path.name + ".pop3d-new"), st.st_mode & 0o7777,
                         (st.st_uid, st.st_gid), write)  # fmt: skip
        except PermissionError as exc:  # the owner could not be kept: delete nothing
            raise StoreUnavailable(f"cannot rewrite {path} as its owner: {exc}") from None

    async def close(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def on_lost(self, callback: Callable[[], None]) -> None:
        """A local lock is not lost while the process lives."""


def _copy(f: BinaryIO, out: BinaryIO, start: int, end: int) -> None:
    f.seek(start)
    left = end - start
    while left > 0:
        block = f.read(min(READ_SIZE, left))
        if not block:
            break
        out.write(block)
        left -= len(block)
