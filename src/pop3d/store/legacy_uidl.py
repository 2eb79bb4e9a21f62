"""UIDLs other servers gave the same Maildir, so a mailbox moved to pop3d keeps them.

POP3 clients remember UIDLs to know what they already downloaded; a server whose UIDLs differ
makes every client fetch everything again. These readers take the record a previous server
left in the Maildir and return, for each message it knew (by Maildir unique name), the UIDL
it served and its position in that server's order. Messages it never saw get pop3d's own UIDL.

- Dovecot: `dovecot-uidlist` (format 1 and 3) with its default `pop3_uidl_format` of
  `%08Xu%08Xv`: IMAP UID and UIDVALIDITY as 8 hex digits each, lower case as Dovecot 2.3
  prints them. A `P` field (a UIDL kept from an earlier migration) wins, and `O` fields give
  the POP3 order.
- Courier: `courierpop3dsizelist` (versions 0 to 3): `UID<uid>-<uidvalidity>`, `UID<uid>`, or,
  for messages that had no UID, the file name with unsafe characters as `+XX`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("pop3d.store")


@dataclass(frozen=True, slots=True)
class LegacyUidl:
    uidl: str
    order: int  # the previous server's position for it


Reader = Callable[[Path], dict[str, LegacyUidl]]

_DOVECOT_HEADER_V1 = re.compile(r"1 (\d+) (\d+)$")


def read_dovecot_uidlist(maildir: Path) -> dict[str, LegacyUidl]:
    lines = _lines(maildir / "dovecot-uidlist")
    if not lines:
        return {}
    header, body = lines[0], lines[1:]
    uidvalidity = _dovecot_uidvalidity(header)
    if uidvalidity is None:
        log.warning("%s: unrecognised dovecot-uidlist header", maildir)
        return {}
    version_1 = _DOVECOT_HEADER_V1.match(header) is not None
    found: dict[str, LegacyUidl] = {}
    for line in body:
        # Format 3: "<uid> [<extension fields>] :<file name>"; format 1: "<uid> <file name>".
        fields, sep, name = line.partition(" ") if version_1 else line.partition(" :")
        uid_text, *extensions = fields.split() or [""]
        if not sep or not uid_text.isdigit() or not name:
            continue
        uid = int(uid_text)
        uidl = f"{uid:08x}{uidvalidity:08x}"
        order = uid
        for ext in extensions:
            if ext.startswith("P") and len(ext) > 1:
                uidl = ext[1:]
            elif ext.startswith("O") and ext[1:].isdigit():
                order = int(ext[1:])
        found[name.partition(":")[0]] = LegacyUidl(uidl, order)
    return found


def _dovecot_uidvalidity(header: str) -> int | None:
    match = _DOVECOT_HEADER_V1.match(header)
    if match:
        return int(match.group(1))
    version, *fields = header.split()
    if version != "3":
        return None
    for field in fields:
        if field.startswith("V") and field[1:].isdigit():
            return int(field[1:])
    return None


_COURIER_LINE = re.compile(r"(\S+) (\d+)(?: (\d+)(?::(\d+))?(?::\d+)?)?$")


def read_courier_sizelist(maildir: Path) -> dict[str, LegacyUidl]:
    lines = _lines(maildir / "courierpop3dsizelist")
    if lines and lines[0].startswith("/"):
        lines = lines[1:]  # "/2 <next uid> <uidvalidity>": nothing in it we need
    found: dict[str, LegacyUidl] = {}
    for order, line in enumerate(lines, 1):
        match = _COURIER_LINE.match(line)
        if match is None:
            continue
        name, _size, uid, uidvalidity = match.groups()
        base = name.partition(":")[0]
        if uid and int(uid):
            uidl = f"UID{uid}-{uidvalidity}" if uidvalidity and int(uidvalidity) else f"UID{uid}"
        else:
            uidl = "".join(
                chr(b) if 0x21 <= b <= 0x7E and b not in b"'\"+" else f"+{b:02X}"
                for b in base.encode("utf-8", "surrogateescape")
            )
        found[base] = LegacyUidl(uidl, order)
    return found


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("cannot read %s: %s", path, exc)
        return []
    return [line for line in text.splitlines() if line]


READERS: dict[str, Reader | None] = {
    "unique": None,
    "dovecot": read_dovecot_uidlist,
    "courier": read_courier_sizelist,
}
