"""The mail store interface: what a session needs from wherever the mail lives.

A `Mailstore` opens a user's `Maildrop`, which holds the RFC 1939 exclusive lock until it is
closed and lists a snapshot of the messages taken at open. Messages are read as a stream of
chunks. `expunge` is called only in the UPDATE state, after QUIT; closing without it changes
nothing. Backends report trouble with the exceptions below, which the server maps to replies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..principal import Principal
from ..protocol.maildrop import MessageInfo


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


class Mailstore(Protocol):
    async def open(self, principal: Principal) -> Maildrop:
        """Lock and list the principal's maildrop; raises MaildropLocked or another StoreError."""
        ...
