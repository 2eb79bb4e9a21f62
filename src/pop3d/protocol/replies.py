"""Reply formatting: status lines, response codes (RFC 2449, RFC 3206) and multi-line framing."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

CRLF = b"\r\n"
TERMINATOR = b".\r\n"


class RespCode(StrEnum):
    IN_USE = "IN-USE"  # RFC 2449: the maildrop is locked by another session
    LOGIN_DELAY = "LOGIN-DELAY"  # RFC 2449
    SYS_TEMP = "SYS/TEMP"  # RFC 3206: our fault, try again later
    SYS_PERM = "SYS/PERM"  # RFC 3206: our fault, it will not go away by itself
    AUTH = "AUTH"  # RFC 3206: the credentials (or how they were sent) are the problem


def ok(text: str = "") -> bytes:
    return b"+OK " + text.encode() + CRLF if text else b"+OK" + CRLF


def err(text: str, code: RespCode | None = None) -> bytes:
    prefix = f"-ERR [{code}] " if code else "-ERR "
    return (prefix + text).encode() + CRLF


def multiline(first: bytes, lines: Iterable[str]) -> bytes:
    """A +OK line followed by `lines` and the terminator.

    Only for lines we generate (LIST, UIDL, CAPA); none of them can begin with a dot, which
    `stuff_line` still guards against so the framing can never be broken.
    """
    body = "".join(stuff_line(line) + "\r\n" for line in lines)
    return first + body.encode() + TERMINATOR


def stuff_line(line: str) -> str:
    return "." + line if line.startswith(".") else line
