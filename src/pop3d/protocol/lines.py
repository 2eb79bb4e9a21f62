"""A bounded line splitter for the command channel.

Lines end in LF (CRLF expected, a bare LF tolerated as every peer does). A line longer than the
limit is reported once, as soon as it crosses the limit, and the rest of it is dropped as it
arrives: the buffer never holds more than the limit plus one read.
"""

from __future__ import annotations

from enum import Enum


class LineTooLong(Enum):
    """Returned in place of a line that exceeded the limit."""

    MARK = "line too long"


LINE_TOO_LONG = LineTooLong.MARK


class LineBuffer:
    __slots__ = ("_buf", "_discarding", "_pos", "_scanned", "max_line")

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buf: bytes | bytearray = b""
        self._pos = 0  # start of the unconsumed part of _buf
        self._scanned = 0  # offset up to which _buf is known to hold no LF
        self._discarding = False

    def feed(self, data: bytes) -> None:
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
        self._buf = b""
        self._pos = self._scanned = 0
        self._discarding = False

    def next_line(self) -> bytes | LineTooLong | None:
        """The next complete line without its line end, LINE_TOO_LONG, or None for 'need more'."""
        while True:
            end = self._buf.find(b"\n", max(self._pos, self._scanned))
            if end < 0:
                if len(self._buf) - self._pos > self.max_line:
                    self._drop_all()
                    if not self._discarding:
                        self._discarding = True
                        return LINE_TOO_LONG
                else:
                    self._scanned = len(self._buf)
                return None
            start, self._pos = self._pos, end + 1
            if self._discarding:
                self._discarding = False
                continue
            stop = end - 1 if end > start and self._buf[end - 1] == 0x0D else end
            if stop - start > self.max_line:
                return LINE_TOO_LONG
            line = self._buf[start:stop]
            return line if isinstance(line, bytes) else bytes(line)

    def _drop_all(self) -> None:
        self._buf = b""
        self._pos = self._scanned = 0
