"""The mail store interface: what a session needs from wherever the mail lives.

A `Mailstore` opens a user's `Maildrop`, which holds the RFC 1939 exclusive lock until it is
closed and lists a snapshot of the messages taken at open. Messages are read as a stream of
chunks. `expunge` is called only in the UPDATE state, after QUIT; closing without it changes
nothing. Backends report trouble with the exceptions below, which the server maps to replies.

A `MailSink` is the other side of a store: mail coming in (LMTP, `pop3d deliver`) and what
quotas and the admin commands look at. Its methods block; they are called off the event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..principal import Principal, is_safe_user_name
from ..protocol.maildrop import MessageInfo
from ..quota import Quota


class StoreError(Exception):
    """Base of the store's failures; the message is for the log, never for the client."""


class MaildropLocked(StoreError):
    """Another session holds the maildrop (-ERR [IN-USE])."""


class StoreUnavailable(StoreError):
    """A failure that may go away by itself (-ERR [SYS/TEMP])."""


class StorePermanentError(StoreError):
    """A failure that needs an administrator (-ERR [SYS/PERM])."""


class MessageGone(StoreError):
    """The message was removed by someone else after the snapshot."""


class LockLost(StoreUnavailable):
    """The maildrop's lock was taken over by another session (a lease that expired):
    nothing of this session may be committed."""


class QuotaExceeded(StoreError):
    """A message refused at delivery: the maildrop would be over its quota."""


@dataclass(frozen=True, slots=True)
class ExpungeResult:
    removed: int
    vanished: int  # already gone: counts as deleted
    failed: int  # still there


class MessageReader(Protocol):
    async def read(self) -> bytes:
        """The next chunk of the stored message, b"" at the end."""
        ...

    async def close(self) -> None: ...


class Maildrop(Protocol):
    @property
    def messages(self) -> Sequence[MessageInfo]: ...

    async def open_message(self, message: MessageInfo) -> MessageReader:
        """Raises MessageGone or StoreUnavailable before anything has been read."""
        ...

    def read_now(self, message: MessageInfo) -> bytes | bytearray | None:
        """The whole message if the store can have it without waiting (read ahead, or in the
        kernel's caches), so it is sent without a trip to a thread; None: use open_message.
        Never blocks."""
        ...

    async def expunge(self, messages: Sequence[MessageInfo]) -> ExpungeResult: ...

    async def close(self) -> None:
        """Release the lock. Idempotent."""
        ...

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Have `callback` called if the lock is lost before close (a lease not renewed in
        time): the session must end then, committing nothing. A kernel lock is never lost."""
        ...


class Mailstore(Protocol):
    async def open(self, principal: Principal) -> Maildrop:
        """Lock and list the principal's maildrop; raises MaildropLocked or another StoreError."""
        ...


@dataclass(frozen=True, slots=True)
class MailboxStats:
    messages: int
    octets: int  # as POP3 reports them
    oldest: float | None  # delivery times, seconds since the epoch
    newest: float | None


class MailSink(Protocol):
    def where(self, principal: Principal) -> str:
        """Where the principal's maildrop is, for people to read."""
        ...

    def create(self, principal: Principal, owner: tuple[int, int] | None = None) -> str:
        """Make the principal's maildrop if it is missing (what root makes goes to `owner`,
        uid and gid); `where` it is."""
        ...

    def deliver(self, principal: Principal, chunks: Iterable[bytes], quota: Quota) -> str:
        """Store one message durably, or nothing; its name in the store. Raises
        QuotaExceeded if it does not fit `quota` (checked as it is committed), whatever
        iterating `chunks` raises, or another StoreError (or OSError)."""
        ...

    def usage(self, principal: Principal) -> tuple[int, int]:
        """Octets stored and messages in the maildrop, as quotas count them."""
        ...

    def stats(self, principal: Principal) -> MailboxStats:
        """A look at the maildrop without taking its lock (for `pop3d mailbox stats`)."""
        ...


def mail_path(template: str, principal: Principal) -> str:
    """`template` ([maildir] or [mbox] path) filled in for `principal`, or
    StorePermanentError when the name cannot safely be part of a path."""
    if not is_safe_user_name(principal.name):
        raise StorePermanentError(f"user name {principal.name!r} is not safe in a path")
    local, domain = principal.local_part, principal.domain
    if domain and not is_safe_user_name(domain):
        raise StorePermanentError(f"domain of {principal.name!r} is not safe in a path")
    if "{home}" in template and not principal.home:
        raise StorePermanentError(f"user {principal.name!r} has no home directory")
    return template.format(
        user=principal.name, local=local, domain=domain, home=principal.home or ""
    )
