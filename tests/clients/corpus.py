"""The test mailbox every client in tests/clients fetches: (name, bytes) pairs, as stored.

Each message carries `Message-ID: <NAME@corpus.pop3d.test>` so a mismatch can be reported by
name. Some are stored with CRLF line ends, some with bare LF and one with a mix: pop3d sends
all of them with CRLF. Nothing here has a Return-Path: or Sender: header (getmail rewrites
those) or a header line longer than 78 characters (getmail refolds those).

A client gets the right bytes when what it delivered, with CRLF turned into LF, equals
`expected_lf(data)`: the stored message with CRLF turned into LF, plus the final line end
that POP3 cannot leave out (RFC 1939 section 3: a multi-line response is made of lines, so
pop3d ends a message without a final line end with CRLF, as the README says).
"""

from __future__ import annotations

# pop3d reads message files in chunks of this size (pop3d.store.maildir.CHUNK_SIZE): the
# large messages put dots and line ends right at these file offsets.
READ_CHUNK = 256 * 1024


def _header(name: str, subject: str, eol: bytes = b"\r\n") -> bytes:
    lines = [
        b"From: Alice Example <alice@example.org>",
        b"To: Bob Example <bob@example.org>",
        b"Subject: " + subject.encode("ascii"),
        b"Date: Tue, 04 Jun 2024 10:00:00 +0000",
        b"Message-ID: <" + name.encode("ascii") + b"@corpus.pop3d.test>",
        b"MIME-Version: 1.0",
        b"Content-Type: text/plain; charset=us-ascii",
    ]
    return eol.join(lines) + eol + eol


def _lines(lines: list[bytes], eol: bytes) -> bytes:
    return b"".join(line + eol for line in lines)


PLAIN = _header("plain", "A plain message") + _lines(
    [
        b"Hello Bob,",
        b"",
        b"a plain message with CRLF line ends.",
        b"From the start of a line (no client may quote this as >From in a Maildir).",
        b"Trailing spaces stay:   ",
        b"\tand a tab leads this line.",
        b"",
        b"-- ",
        b"Alice",
    ],
    b"\r\n",
)

# Dot-stuffing: the first body line is a lone dot, then every kind of line that starts with
# one, and the last line is a lone dot too (so the wire has "..\r\n.\r\n" at the end).
DOTS_CRLF = _header("dots-crlf", "Dots, CRLF") + _lines(
    [
        b".",
        b".leading dot",
        b"..two dots",
        b"...three dots",
        b". a dot and a space",
        b".   ",
        b"a line between",
        b".",
        b"",
        b"..",
        b".\t",
        b"middle . dot and a dot at the end .",
        b".",
    ],
    b"\r\n",
)

# The same with bare LF line ends on disk; the first body line starts with a dot.
DOTS_LF = _header("dots-lf", "Dots, bare LF", b"\n") + _lines(
    [
        b".first body line starts with a dot",
        b".",
        b"..",
        b"...",
        b"text",
        b".",
        b".last line",
    ],
    b"\n",
)

BARE_LF = _header("bare-lf", "Stored with bare LF", b"\n") + _lines(
    [b"This message is stored with LF line ends.", b"", b"pop3d sends CRLF.", b"end"],
    b"\n",
)

MIXED_EOL = (
    _header("mixed-eol", "Mixed line ends")
    + b"this line ends CRLF\r\n"
    + b"this one LF\n"
    + b".dot after LF\n"
    + b".dot after CRLF\r\n"
    + b"\n"
    + b"blank LF line above\r\n"
)

# Headers, the blank line, and nothing else.
EMPTY_BODY = _header("empty-body", "Empty body")
EMPTY_BODY_LF = _header("empty-body-lf", "Empty body, bare LF", b"\n")

# The last line has no line end: POP3 adds one (see expected_lf).
NO_FINAL_EOL = _header("no-final-eol", "No final line end") + b"first line\r\nlast line"

# Raw UTF-8 in From: and Subject:, an 8-bit latin-1 body with every octet from 0x80 to 0xFF.
EIGHT_BIT = (
    b"From: J\xc3\xbcrgen M\xc3\xbcller <juergen@example.org>\r\n"
    b"To: Ren\xc3\xa9e <renee@example.org>\r\n"
    b"Subject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x80\x93 \xe2\x9c\x93 \xf0\x9f\x93\xac\r\n"
    b"Date: Tue, 04 Jun 2024 10:00:00 +0000\r\n"
    b"Message-ID: <eight-bit@corpus.pop3d.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Stra\xdfe, K\xf6ln, \xe9t\xe9, na\xefve, \xa9 \xbd\r\n"
    + bytes(range(0x80, 0xC0))
    + b"\r\n"
    + bytes(range(0xC0, 0x100))
    + b"\r\n"
    + b".\xe9 a dot before an 8-bit octet\r\n"
)


def _long_line(n: int, first: bytes = b"L") -> bytes:
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (first + pattern * (n // len(pattern) + 1))[:n]


# Lines around the RFC 5322 limit (998 + CRLF), around poplib's 2048 and far beyond.
LONG_LINES = _header("long-lines", "Lines over 1000 octets") + _lines(
    [
        _long_line(998),
        _long_line(999),
        _long_line(1000),
        _long_line(1001),
        _long_line(2047),
        _long_line(2048),
        _long_line(2049),
        _long_line(4096, b"."),
        _long_line(8193),
        b"short line between",
        _long_line(100_000),
    ],
    b"\r\n",
)


def _large(name: str, eol: bytes, size: int = 1024 * 1024 + 4321) -> bytes:
    """About 1 MB of numbered lines, with dots and line ends placed on the read boundaries:
    at the 1st a dot line starts exactly there; at the 2nd the line end straddles it and a
    lone dot follows; at the 3rd the boundary falls just after a leading dot."""
    out = bytearray(_header(name, f"Large, {len(eol)}-octet line ends", eol))
    number = 0

    def fill_to(offset: int) -> None:
        nonlocal number
        while len(out) < offset:
            room = offset - len(out)
            if room >= 200:
                line = f"{number:07d} ".encode() + _long_line(70, b"x")
            else:
                assert room > len(eol), (name, room)
                line = b"y" * (room - len(eol))
            out.extend(line + eol)
            number += 1
        assert len(out) == offset, (name, len(out), offset)

    fill_to(READ_CHUNK - 300)
    fill_to(READ_CHUNK)
    out.extend(b".dot line starting on the first read boundary" + eol)
    text = b"line end across the boundary"
    fill_to(2 * READ_CHUNK - 300)
    fill_to(2 * READ_CHUNK - 1 - len(text))
    out.extend(text + eol)  # CRLF: CR is the last octet of a read, LF the first of the next
    assert len(out) == 2 * READ_CHUNK - 1 + len(eol)
    out.extend(b"." + eol)
    fill_to(3 * READ_CHUNK - 300)
    fill_to(3 * READ_CHUNK - 1)
    out.extend(b".the boundary falls after this dot" + eol)
    fill_to(size - 100)
    out.extend(b".." + eol + b"." + eol + b"the end" + eol)
    return bytes(out)


LARGE_CRLF = _large("large-crlf", b"\r\n")
LARGE_LF = _large("large-lf", b"\n")

CORPUS: list[tuple[str, bytes]] = [
    ("plain", PLAIN),
    ("dots-crlf", DOTS_CRLF),
    ("dots-lf", DOTS_LF),
    ("bare-lf", BARE_LF),
    ("mixed-eol", MIXED_EOL),
    ("empty-body", EMPTY_BODY),
    ("empty-body-lf", EMPTY_BODY_LF),
    ("no-final-eol", NO_FINAL_EOL),
    ("eight-bit", EIGHT_BIT),
    ("long-lines", LONG_LINES),
    ("large-crlf", LARGE_CRLF),
    ("large-lf", LARGE_LF),
]


def to_lf(data: bytes) -> bytes:
    """Line ends turned into LF: the comparison both sides go through."""
    return data.replace(b"\r\n", b"\n")


def expected_lf(data: bytes) -> bytes:
    """What any client must hand over for stored `data`, after to_lf()."""
    lf = to_lf(data)
    return lf if lf.endswith(b"\n") else lf + b"\n"


def expected_crlf(data: bytes) -> bytes:
    """The message as POP3 carries it before byte-stuffing (its LIST size is the length)."""
    return expected_lf(data).replace(b"\n", b"\r\n")


def dot_stuffed(data: bytes) -> bytes:
    """The exact octets of a RETR response body: stuffed, ended by CRLF.CRLF."""
    lines = expected_crlf(data).split(b"\r\n")[:-1]
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + (
        b".\r\n"
    )


def _check() -> None:
    names = [name for name, _ in CORPUS]
    assert len(set(names)) == len(names)
    for name, data in CORPUS:
        assert b"<" + name.encode() + b"@corpus.pop3d.test>" in data, name
        assert b"\r" not in data.replace(b"\r\n", b""), f"{name}: a bare CR is not comparable"
    assert len(LARGE_CRLF) > 1024 * 1024
    assert len(LARGE_LF) > 1024 * 1024


_check()
