"""Delivering one message to one recipient: who it is, whether it fits, and storing it.

Shared by the LMTP listener and `pop3d deliver`, so both answer the same way. Everything here
blocks (user database, disk): the LMTP listener runs it on a thread pool.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum

from ..auth.base import AuthUnavailable, UserDatabase
from ..config import Config
from ..principal import Principal, is_safe_user_name
from ..quota import Quota
from ..store.base import MailSink, QuotaExceeded, StoreError, StoreUnavailable

log = logging.getLogger("pop3d.delivery")

# Errors that will not go away by retrying: the Maildir cannot be created or written at all.
_CANNOT_CREATE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR})


class Outcome(Enum):
    """LMTP reply code, enhanced status code (RFC 3463), text, and sysexits code for the LDA."""

    DELIVERED = ("250", "2.0.0", "Saved", 0)
    UNKNOWN_USER = ("550", "5.1.1", "User unknown", 67)  # EX_NOUSER
    TOO_BIG = ("552", "5.3.4", "Message too big", 73)  # EX_CANTCREAT
    OVER_QUOTA = ("552", "5.2.2", "Mailbox is full", 73)
    OVER_QUOTA_TEMPORARY = ("452", "4.2.2", "Mailbox is full, try again later", 75)
    CANNOT_CREATE = ("451", "4.3.0", "Cannot write to the mailbox", 73)
    TEMPORARY = ("451", "4.3.0", "Temporary failure, try again later", 75)  # EX_TEMPFAIL

    @property
    def exit_code(self) -> int:
        return int(self.value[3])

    def reply(self, recipient: str) -> str:
        code, enhanced, text, _ = self.value
        return f"{code} {enhanced} <{recipient}> {text}"


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    principal: Principal
    quota: Quota


def without_from_line(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The message without the mbox `From sender date` line an MTA's local delivery puts in
    front of it (Postfix's local(8) for mailbox_command, procmail): it is no header, and
    dovecot-lda and maildrop drop it too."""
    iterator = iter(chunks)
    head = b""
    for chunk in iterator:
        head += chunk
        if b"\n" in head or (len(head) >= 5 and not head.startswith(b"From ")):
            break
    if head.startswith(b"From "):
        head = head.partition(b"\n")[2]
    if head:
        yield head
    yield from iterator


class _Refused(Exception):
    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class Deliverer:
    def __init__(self, config: Config, users: UserDatabase, sink: MailSink) -> None:
        self.config = config
        self.users = users
        self.sink = sink

    def resolve(self, address: str) -> Recipient | None:
        """The user an address is for: the whole address, then without the +extension, then
        its local part alone (for passwd-files of bare names)."""
        for name in self._candidates(address):
            if not is_safe_user_name(name):
                continue
            entry = self.users.lookup(name)
            if entry is not None:
                quota = self.config.default_quota.merged(entry.quota)
                return Recipient(address, entry.principal(), quota)
        return None

    def _candidates(self, address: str) -> Iterator[str]:
        local, at, domain = address.rpartition("@") if "@" in address else (address, "", "")
        delimiter = self.config.delivery.recipient_delimiter
        base_local = local.split(delimiter, 1)[0] if delimiter else local
        yield address
        if base_local != local:
            yield f"{base_local}{at}{domain}"
        if at:
            yield local
            if base_local != local:
                yield base_local

    def recipient(self, address: str) -> Recipient | Outcome:
        """The recipient, or why there is none: unknown, or the users cannot be read now."""
        try:
            recipient = self.resolve(address)
        except AuthUnavailable as exc:
            log.error("cannot look %s up: %s", address, exc)
            return Outcome.TEMPORARY
        return recipient if recipient is not None else Outcome.UNKNOWN_USER

    def over_quota(self, recipient: Recipient, incoming: int = 0) -> Outcome | None:
        """Whether `incoming` more octets would not fit; None when they do."""
        quota = recipient.quota
        if not (quota.storage or quota.messages):
            return None
        try:
            octets, count = self.sink.usage(recipient.principal)
        except (StoreError, OSError) as exc:
            log.error("cannot count the mail of %s: %s", recipient.principal.name, exc)
            return Outcome.TEMPORARY
        return self._over_quota() if quota.exceeded(octets + incoming, count + 1) else None

    def _over_quota(self) -> Outcome:
        tempfail = self.config.delivery.quota_full_tempfail
        return Outcome.OVER_QUOTA_TEMPORARY if tempfail else Outcome.OVER_QUOTA

    def deliver(self, recipient: Recipient, chunks: Iterable[bytes]) -> Outcome:
        limit = self.config.delivery.max_message_size

        def bounded() -> Iterator[bytes]:
            total = 0
            for chunk in chunks:
                total += len(chunk)
                if total > limit:
                    raise _Refused(Outcome.TOO_BIG)
                yield chunk

        try:
            name = self.sink.deliver(recipient.principal, bounded(), recipient.quota)
        except _Refused as refused:
            return refused.outcome
        except QuotaExceeded:
            return self._over_quota()
        except StoreUnavailable as exc:
            log.error("delivery to %s failed: %s", recipient.principal.name, exc)
            return Outcome.TEMPORARY
        except StoreError as exc:
            log.error("cannot deliver to %s: %s", recipient.principal.name, exc)
            return Outcome.CANNOT_CREATE
        except OSError as exc:
            log.error("delivery to %s failed: %s", recipient.principal.name, exc)
            return Outcome.CANNOT_CREATE if exc.errno in _CANNOT_CREATE else Outcome.TEMPORARY
        log.info("delivered to %s as %s", recipient.principal.name, name)
        return Outcome.DELIVERED
