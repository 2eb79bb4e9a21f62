"""`pop3d migrate`: users and Maildirs, as an old (Maildir) configuration serves them, into
PostgreSQL, keeping every UIDL and octet count exactly as the old server announced them, so
that no client downloads anything twice.

Old mail is only read: each user's maildrop is opened as the old server would open it (its
lock taken, so a user in a session is skipped and left for the next run, never copied half
way). Each message is one transaction: a run that stops part way keeps what it copied, and a
rerun copies only what is missing (a migrated message is known by its UIDL).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from .auth.base import UserEntry
from .auth.postgresql import PostgresUsers
from .backends import Backends
from .principal import Principal
from .protocol.maildrop import MessageInfo
from .quota import Quota
from .store.base import Maildrop, MaildropLocked, Mailstore
from .store.postgresql import PostgresStore


@dataclass
class Counts:
    user: str
    messages: int = 0
    copied: int = 0
    skipped: str | None = None  # why the user was left for the next run

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.user}: skipped, {self.skipped}"
        there = self.messages - self.copied
        return f"{self.user}: {self.messages} messages, {self.copied} copied, {there} already there"


async def _read(drop: Maildrop, message: MessageInfo) -> bytes:
    reader = await drop.open_message(message)
    try:
        chunks = []
        while chunk := await reader.read():
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        await reader.close()


async def migrate(
    old: Backends, new: Backends, names: Sequence[str], say: Callable[[str], None]
) -> list[Counts]:
    """Copy the users named (all when none) from `old` into `new`; the counts per user."""
    store = new.store
    assert isinstance(store, PostgresStore), "the new configuration's store is PostgreSQL"
    entries = _chosen(old.users.users(), names)
    results = []
    for entry in entries:
        if isinstance(new.users, PostgresUsers) and new.db is not None:
            field = entry.password.field if entry.password else None
            await new.db.run(new.users.insert(entry, field, replace=True))
        counts = await _copy_user(old.store, store, entry)
        say(str(counts))
        results.append(counts)
    return results


def _chosen(entries: Sequence[UserEntry], names: Sequence[str]) -> list[UserEntry]:
    if not names:
        return sorted(entries, key=lambda e: e.name)
    by_name = {e.name: e for e in entries}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ValueError(f"no user {missing[0]} in the old configuration")
    return [by_name[n] for n in names]


async def _copy_user(old: Mailstore, new: PostgresStore, entry: UserEntry) -> Counts:
    counts = Counts(entry.name)
    principal = entry.principal()
    try:
        drop = await old.open(principal)
    except MaildropLocked:
        counts.skipped = "the old maildrop is in use (run again later)"
        return counts
    try:
        counts.messages = len(drop.messages)
        there = await new.db.run(lambda conn: _migrated_uidls(conn, entry.name))
        for message in drop.messages:
            if message.uidl in there:
                continue
            data = await _read(drop, message)

            async def copy(conn: psycopg.AsyncConnection[Any], data: bytes = data,
                           message: MessageInfo = message) -> None:  # fmt: skip
                await new.store_message(
                    conn, entry.name, [data], Quota(), uidl=message.uidl, size=message.size
                )

            await new.db.run(copy)
            counts.copied += 1
    finally:
        await drop.close()
    return counts


async def _migrated_uidls(conn: psycopg.AsyncConnection[Any], name: str) -> set[str]:
    cur = await conn.execute(
        "SELECT m.uidl FROM pop3d_messages m JOIN pop3d_mailboxes b ON b.id = m.mailbox "
        "WHERE b.name = %s AND m.uidl IS NOT NULL",
        (name,),
    )
    return {row[0] for row in await cur.fetchall()}


async def verify(
    old: Backends, new: Backends, names: Sequence[str], say: Callable[[str], None]
) -> bool:
    """Whether every user's UIDL list, sizes and message contents are the same in both."""
    same = True
    for entry in _chosen(old.users.users(), names):
        principal = Principal(entry.name, entry.home)
        listings = []
        for store in (old.store, new.store):
            drop = await store.open(principal)
            try:
                listings.append(
                    [
                        (m.uidl, m.size, hashlib.sha256(await _read(drop, m)).hexdigest())
                        for m in drop.messages
                    ]
                )
            finally:
                await drop.close()
        before, after = listings
        # Mail delivered to the new store since comes after what was migrated.
        if after[: len(before)] == before:
            say(f"{entry.name}: the same {len(before)} messages")
        else:
            same = False
            first = next((i for i, (a, b) in enumerate(zip(before, after, strict=False))
                          if a != b), min(len(before), len(after)))  # fmt: skip
            say(f"{entry.name}: DIFFERENT from message {first + 1} on")
    return same
