"""Turning stored message bytes into a POP3 multi-line body, incrementally.

Messages on disk may end lines with LF, CRLF or a mix. On the wire every line ends with CRLF,
a line that begins with "." gets one more (byte-stuffing, RFC 1939 section 3), and the body ends
with CRLF "." CRLF. All of this works on whole chunks with `bytes` methods, and carries the one
piece of state a chunk boundary can split (a CR whose LF is in the next chunk, and whether the
next chunk starts a line), so the result does not depend on where the reads fall.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from .replies import CRLF, TERMINATOR

# A store may hand over the buffer it read into rather than pay for a copy to `bytes`.
Octets = bytes | bytearray

_c_encode: Callable[[bytes, Octets, bool, bool, bool], tuple[bytes, bool, bool]] | None
try:
    from ._stuffing import encode as _c_encode
except ImportError:  # built without a C compiler: MessageEncoder does the same in Python
    _c_encode = None

DOT_SCAN_LIMIT = 64  # dots looked at one by one before a chunk is stuffed by `replace`


class LineEndNormalizer:
    """Bare LF becomes CRLF; CRLF and a CR inside a line stay; a CR ending the input ends a line."""

    __slots__ = ("_held_cr",)

    def __init__(self) -> None:
        self._held_cr = False

    def feed(self, chunk: Octets) -> Octets:
        if self._held_cr:
            chunk = b"\r" + chunk
        self._held_cr = chunk.endswith(b"\r")
        if self._held_cr:
            chunk = chunk[:-1]
        if b"\r" not in chunk:  # LF only, as Postfix and Exim write: one pass
            return chunk.replace(b"\n", b"\r\n")
        if chunk.count(b"\n") != chunk.count(b"\r\n"):  # mixed
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        return chunk

    def finish(self) -> bytes:
        held, self._held_cr = self._held_cr, False
        return CRLF if held else b""


class Encoder(Protocol):
    """Stored message bytes in, POP3 multi-line body bytes out: every chunk through `feed`
    (stop early once `done`), then `finish` for the rest and the terminator. `whole` does all
    of it for a message read at once, after `prefix` (the status line)."""

    done: bool

    def feed(self, chunk: Octets) -> Octets: ...

    def finish(self) -> bytes: ...

    def whole(self, prefix: bytes, data: Octets) -> bytes: ...


def message_encoder(body_lines: int | None = None) -> Encoder:
    """The encoder for RETR (`body_lines` None) or TOP: the C one where it was built and applies."""
    if body_lines is None and _c_encode is not None:
        return CMessageEncoder()
    return MessageEncoder(body_lines)


class MessageEncoder:
    """The encoder in Python, and the reference for the C one.

    With `body_lines` set (TOP), only the header, the blank line and that many body lines pass;
    `done` then tells the caller it may stop reading.
    """

    __slots__ = ("_at_line_start", "_in_header", "_normalizer", "_recent", "_remaining", "done")

    def __init__(self, body_lines: int | None = None) -> None:
        self._normalizer = LineEndNormalizer()
        self._at_line_start = True
        self._remaining = body_lines
        self._in_header = body_lines is not None
        # The last bytes sent, to find the blank line across chunks. It starts as a line end so
        # that a message whose very first line is blank (no header) is found too.
        self._recent = CRLF
        self.done = False

    def feed(self, chunk: Octets) -> Octets:
        if self.done:
            return b""
        data = self._normalizer.feed(chunk)
        if self._remaining is not None:
            data = self._limit(data)
        return self._stuff(data)

    def finish(self) -> bytes:
        """The rest of the body and the terminator."""
        out = b"" if self.done else bytes(self._flush_normalizer())
        if not self._at_line_start:
            out += CRLF
        self.done = True
        return out + TERMINATOR

    def whole(self, prefix: bytes, data: Octets) -> bytes:
        return b"".join((prefix, self.feed(data), self.finish()))

    def _flush_normalizer(self) -> Octets:
        data: Octets = self._normalizer.finish()
        if self._remaining is not None:
            data = self._limit(data)
        return self._stuff(data)

    def _stuff(self, data: Octets) -> Octets:
        if not data:
            return data.replace(b"\n.", b"\n..")
        out = _double_line_dots(data)
        if self._at_line_start and data[0] == 0x2E:
            out = b"." + out
        self._at_line_start = data[-1] == 0x0A
        return out

    def _limit(self, data: Octets) -> Octets:
        head: Octets = b""
        if self._in_header:
            window = self._recent + data
            end = window.find(b"\r\n\r\n")
            if end < 0:
                self._recent = window[-3:]
                return data
            self._in_header = False
            split = end + 4 - len(self._recent)
            head, data = data[:split], data[split:]
        return head + self._take_lines(data)

    def _take_lines(self, data: Octets) -> Octets:
        assert self._remaining is not None
        pos = 0
        while self._remaining:
            newline = data.find(b"\n", pos)
            if newline < 0:
                return data
            pos = newline + 1
            self._remaining -= 1
        self.done = True
        return data[:pos]


class CMessageEncoder:
    """MessageEncoder without TOP's line limit, on the loop in _stuffing.c: one pass over the
    message in place of two and no Python-level loop over its dots."""

    __slots__ = ("_at_line_start", "_held_cr", "done")

    def __init__(self) -> None:
        if _c_encode is None:
            raise RuntimeError("pop3d was built without its C encoder")
        self._held_cr = False
        self._at_line_start = True
        self.done = False

    def feed(self, chunk: Octets) -> Octets:
        return self._encode(b"", chunk, False)

    def finish(self) -> bytes:
        return self._encode(b"", b"", True)

    def whole(self, prefix: bytes, data: Octets) -> bytes:
        return self._encode(prefix, data, True)

    def _encode(self, prefix: bytes, data: Octets, final: bool) -> bytes:
        assert _c_encode is not None
        if self.done:
            return b""
        out, self._held_cr, self._at_line_start = _c_encode(
            prefix, data, self._held_cr, self._at_line_start, final
        )
        self.done = final
        return out


def _double_line_dots(data: Octets) -> Octets:
    """`data` (CRLF lines) with each "." that follows an LF doubled.

    Mail has few dots (base64 has none), so they are found one by one with a single-byte
    search (memchr) and the byte before each is looked at: several times faster than searching
    for the two-byte pattern. A text with many dots gets the one-pass replace instead.
    """
    pos = data.find(b".", 1)
    cuts: list[int] = []
    for _ in range(DOT_SCAN_LIMIT):
        if pos < 0:
            break
        if data[pos - 1] == 0x0A:
            cuts.append(pos)
        pos = data.find(b".", pos + 1)
    else:
        if pos >= 0:
            return data.replace(b"\n.", b"\n..")
    if not cuts:
        return data
    view = memoryview(data)  # slices of a view are not copies: the join is the one copy
    starts = [0, *cuts]
    return b".".join([view[a:b] for a, b in zip(starts, [*cuts, len(data)], strict=True)])


class WireSizeCounter:
    """The octets of a message as RETR sends it, before byte-stuffing: what LIST reports."""

    __slots__ = ("_last", "_normalizer", "_size")

    def __init__(self) -> None:
        self._normalizer = LineEndNormalizer()
        self._size = 0
        self._last = 0x0A  # an empty message needs no line end added

    def feed(self, chunk: bytes) -> None:
        data = self._normalizer.feed(chunk)
        if data:
            self._size += len(data)
            self._last = data[-1]

    def finish(self) -> int:
        tail = self._normalizer.finish()
        if tail:
            return self._size + len(tail)
        return self._size if self._last == 0x0A else self._size + 2  # MessageEncoder adds CRLF


def wire_size(chunks: Iterable[bytes]) -> int:
    counter = WireSizeCounter()
    for chunk in chunks:
        counter.feed(chunk)
    return counter.finish()


def unstuff(body: bytes) -> bytes:
    """The inverse of MessageEncoder for a complete body (terminator included): for clients."""
    if not body.endswith(TERMINATOR):
        raise ValueError("a multi-line body ends with CRLF.CRLF")
    content = body[: -len(TERMINATOR)]
    if content.startswith(b".."):
        content = content[1:]
    return content.replace(b"\r\n..", b"\r\n.")
