"""A bounded line splitter for the command channel.

Lines end in LF (CRLF expected, a bare LF tolerated as every peer does). A line longer than the
limit is reported once, as soon as it crosses the limit, and the rest of it is dropped as it
arrives: the buffer never holds more than the limit plus one read. A line that goes on for
`ENDLESS_MARGIN` octets past the limit is reported as endless (the caller closes the
connection): dropping input costs little memory, but reading it still costs CPU, and a client
that never ends its line could make us read without end.
"""

from __future__ import annotations

from enum import Enum


class LineTooLong(Enum):
    """Returned in place of a line that exceeded the limit."""

    MARK = "line too long"
    ENDLESS = "line too long by far"  # ENDLESS_MARGIN past the limit: give up on the peer


LINE_TOO_LONG = LineTooLong.MARK
LINE_ENDLESS = LineTooLong.ENDLESS
ENDLESS_MARGIN = 64 * 1024


class LineBuffer:
    __slots__ = (
        "_buf",
        "_discarding",
        "_dropped",
        "_endless_at",
        "_endless_due",
        "_given_up",
        "_pos",
        "_scanned",
        "max_line",
    )

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf: bytes | bytearray = b""
        self._pos = 0  # start of the unconsumed part of _buf
        self._scanned = 0  # offset up to which _buf is known to hold no LF
        self._discarding = False
        self._dropped = 0  # octets before the LF of the line being discarded, so far
        self._endless_at = 0  # ... and how many make it endless (the limit may change meanwhile)
        self._endless_due = False  # LINE_ENDLESS is the next answer
        self._given_up = False  # LINE_ENDLESS was answered: nothing more is read

    def feed(self, data: bytes) -> None:
        if self._given_up:
            return
        if self._pos >= len(self._buf):
            # All of it was consumed, as it is after nearly every read (one command, one
            # reply): the new data becomes the buffer without a copy, and its lines are
            # sliced out of it as `bytes` directly.
            self._buf = bytes(data)
            self._pos = self._scanned = 0
            return
        # Data accumulates (a partial line, or input while an event is pending): in a
        # bytearray, which grows in place, so a client sending a byte at a time costs a
        # byte's work per read, not a copy of everything buffered. The consumed part is
        # dropped once it is half the buffer.
        if isinstance(self._buf, bytes) or self._pos >= len(self._buf) // 2:
            self._buf = bytearray(memoryview(self._buf)[self._pos :])
            self._scanned = max(0, self._scanned - self._pos)
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def clear(self) -> None:
        """Forget everything buffered (STLS: plaintext sent after the command is not trusted)."""
        self._drop_all()
        self._discarding = self._endless_due = False
        self._dropped = 0

    def next_line(self) -> bytes | LineTooLong | None:
        """The next complete line without its line end, LINE_TOO_LONG (once per long line, as it
        crosses the limit), LINE_ENDLESS (after that, once the line has gone on for
        ENDLESS_MARGIN past the limit; then nothing more), or None for 'need more'."""
        while not self._given_up:
            if self._endless_due:
                self._given_up = True
                self._drop_all()
                return LINE_ENDLESS
            end = self._buf.find(b"\n", max(self._pos, self._scanned))
            if end < 0:
                pending = len(self._buf) - self._pos
                if self._discarding:
                    self._dropped += pending
                    self._drop_all()
                    self._endless_due = self._endless()
                    if self._endless_due:
                        continue
                    return None
                # A CR at the end may be the line's end, its LF still to come.
                if pending > self.max_line and pending - (self._buf[-1] == 0x0D) > self.max_line:
                    self._too_long(pending)
                    self._discarding = True  # until its LF
                    self._drop_all()
                    return LINE_TOO_LONG
                self._scanned = len(self._buf)
                return None
            start, self._pos = self._pos, end + 1
            if self._discarding:
                self._dropped += end - start
                self._discarding = False
                self._endless_due = self._endless()
                continue
            stop = end - 1 if end > start and self._buf[end - 1] == 0x0D else end
            if stop - start > self.max_line:
                # Arrived whole, yet answered as if it had come piece by piece: the same
                # answers whatever the chunking.
                self._too_long(end - start)
                return LINE_TOO_LONG
            line = self._buf[start:stop]
            return line if isinstance(line, bytes) else bytes(line)
        return None

    def _too_long(self, seen: int) -> None:
        """A line just went past the limit, `seen` octets of it so far."""
        self._dropped = seen
        self._endless_at = self.max_line + ENDLESS_MARGIN
        self._endless_due = self._endless()

    def _endless(self) -> bool:
        return self._dropped > self._endless_at

    def _drop_all(self) -> None:
        self._buf = b""
        self._pos = self._scanned = 0
