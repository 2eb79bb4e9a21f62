"""The session's view of a maildrop: numbering, deletion marks, and the answers built on them.

Three numbering spaces, kept apart by name: a *message number* is what the client sees (1..n,
fixed for the session, RFC 1939 section 5); an *index* is its position in `messages` (0..n-1);
the store's own reference (`MessageInfo.ref`) is opaque here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

# No maildrop holds more messages than this; longer digit strings are refused before int().
_MAX_DIGITS = 10


@dataclass(frozen=True, slots=True)
class MessageInfo:
    uidl: str
    size: int
    ref: object  # the store's handle; the core never looks inside


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message argument was refused; the text is sent after -ERR."""

    text: str
    malformed: bool  # not a message number at all (counts as a bad command)


class MaildropView:
    __slots__ = ("_deleted", "_deleted_octets", "_messages", "_octets")

    def __init__(self, messages: Sequence[MessageInfo]) -> None:
        self._messages = tuple(messages)  # no copy when it is a tuple already
        self._octets = sum([m.size for m in self._messages])
        self._deleted: set[int] | None = None  # indexes; made at the first DELE
        self._deleted_octets = 0

    def stat(self) -> tuple[int, int]:
        """Count and octets of the messages not marked deleted."""
        deleted = len(self._deleted) if self._deleted else 0
        return len(self._messages) - deleted, self._octets - self._deleted_octets

    def lookup(self, arg: str) -> tuple[int, MessageInfo] | Rejected:
        """The one check every message command shares: syntax, range, deletion."""
        if not arg.isdigit() or not arg.isascii():
            return Rejected(f"Invalid message number: {arg[:20]}", malformed=True)
        if len(arg) > _MAX_DIGITS:
            return Rejected("Invalid message number: too large.", malformed=True)
        number = int(arg)
        if number == 0:
            return Rejected("There is no message 0: messages are numbered from 1.", malformed=False)
        if number > len(self._messages):
            return Rejected(f"There is no message {number}.", malformed=False)
        if self._deleted and number - 1 in self._deleted:
            return Rejected(f"Message {number} is deleted.", malformed=False)
        return number, self._messages[number - 1]

    def delete(self, number: int) -> None:
        index = number - 1
        if self._deleted is None:
            self._deleted = set()
        if index not in self._deleted:
            self._deleted.add(index)
            self._deleted_octets += self._messages[index].size

    def reset(self) -> None:
        self._deleted = None
        self._deleted_octets = 0

    def listing(self) -> Iterator[tuple[int, MessageInfo]]:
        """(message number, message) for every message not marked deleted, in order."""
        deleted: set[int] | frozenset[int] = self._deleted or frozenset()
        for index, message in enumerate(self._messages):
            if index not in deleted:
                yield index + 1, message

    def marked(self) -> tuple[MessageInfo, ...]:
        """The messages to remove at UPDATE."""
        return tuple(self._messages[i] for i in sorted(self._deleted or ()))
