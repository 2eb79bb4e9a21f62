"""The PostgreSQL backend: mail, and the RFC 1939 lock, shared by any number of pop3d nodes.

A message is a row of `pop3d_messages` (its UID, given once at delivery from the mailbox's
counter by one atomic UPDATE ... RETURNING; its size in CRLF octets; the UIDL an earlier server
gave it, for migrated mail) and its octets as it was delivered, in rows of `CHUNK_SIZE` in
`pop3d_chunks`, so a 50 MiB message is read a few chunks per query, in bounded memory. UIDLs
are `%08x%08x` of UID and UIDVALIDITY (Dovecot's default form), or the migrated ones.

The lock is a lease row per mailbox: taken at login before the +OK (a holder, the node's
random id and the session; an expiry, `now() + lease_ttl` by the database's clock; a
generation, one more at every take-over), renewed every third of `lease_ttl`, released at the
end. A lease still held gives MaildropLocked on every node. QUIT's deletions run in one
transaction that first locks the lease row and checks that this session's holder and
generation still own it: a node that was frozen or cut off while another took the mailbox over
deletes nothing when it wakes. A session whose lease cannot be renewed in time is told to end
(`on_lost`), committing nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

import psycopg

from ..postgres import CHUNK_SIZE, Database, DatabaseUnavailable
from ..principal import Principal
from ..protocol.dotstuff import WireSizeCounter
from ..protocol.maildrop import MessageInfo
from ..quota import Quota
from .base import (
    ExpungeResult,
    LockLost,
    MailboxStats,
    MaildropLocked,
    MessageGone,
    QuotaExceeded,
    StoreUnavailable,
)

log = logging.getLogger("pop3d.store")

T = TypeVar("T")

READ_CHUNKS = 4  # chunks read per query of a large message: 1 MiB
READ_AHEAD = 512 * 1024  # octets of the small messages after the one asked for, read with it

_TAKE_LEASE = """
INSERT INTO pop3d_leases (mailbox, holder, generation, expires)
SELECT id, %(holder)s, 1, now() + %(ttl)s * interval '1 second'
  FROM pop3d_mailboxes WHERE name = %(name)s
ON CONFLICT (mailbox) DO UPDATE
   SET holder = EXCLUDED.holder, generation = pop3d_leases.generation + 1,
       expires = EXCLUDED.expires
 WHERE pop3d_leases.holder IS NULL OR pop3d_leases.expires < now()
RETURNING mailbox, generation,
          (SELECT uidvalidity FROM pop3d_mailboxes WHERE id = pop3d_leases.mailbox)
"""
# Read after the lease is held, in a statement of its own: a snapshot taken before (in the
# same statement) could predate the deletions of a holder whose lease expired while its QUIT
# was committing, and list messages that are gone.
_LISTING = "SELECT uid, size, stored, uidl FROM pop3d_messages WHERE mailbox = %s ORDER BY uid"
_NEW_MAILBOX = """
INSERT INTO pop3d_mailboxes (name, uidvalidity) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING
"""
_RENEW = """
UPDATE pop3d_leases SET expires = now() + %s * interval '1 second'
 WHERE mailbox = %s AND holder = %s AND generation = %s
"""
_OWNED = """
SELECT 1 FROM pop3d_leases WHERE mailbox = %s AND holder = %s AND generation = %s FOR UPDATE
"""
_RELEASE = """
UPDATE pop3d_leases SET holder = NULL, expires = now()
 WHERE mailbox = %s AND holder = %s AND generation = %s
"""


class PgRef(NamedTuple):  # a tuple: made for every message at every login
    uid: int
    stored: int  # octets in pop3d_chunks

    @property
    def chunks(self) -> int:
        return max(1, -(-self.stored // CHUNK_SIZE))


def uidl_for(uid: int, uidvalidity: int) -> str:
    return f"{uid:08x}{uidvalidity:08x}"


def new_uidvalidity() -> int:
    return int(time.time()) & 0xFFFFFFFF


class PostgresStore:
    """Mailstore and MailSink on `db`. `node` names this process in the leases it holds."""

    def __init__(self, db: Database, lease_ttl: float, node: str | None = None) -> None:
        self.db = db
        self.lease_ttl = lease_ttl
        self.node = node or secrets.token_hex(8)
        self._sessions = itertools.count(1)

    # ---- Mailstore -------------------------------------------------------------------------

    async def open(self, principal: Principal) -> PostgresMaildrop:
        holder = f"{self.node}:{next(self._sessions)}"
        params = {"name": principal.name, "holder": holder, "ttl": self.lease_ttl}

        async def take(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
            cur = await conn.execute(_TAKE_LEASE, params)
            return await cur.fetchone()

        async def create_and_take(conn: psycopg.AsyncConnection[Any]) -> tuple[Any, ...] | None:
            await conn.execute(_NEW_MAILBOX, (principal.name, new_uidvalidity()))
            return await take(conn)

        async def listing(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(_LISTING, (mailbox,))
            return await cur.fetchall()

        try:
            lease = await self.db.run(take, transaction=False)
            if lease is None:  # no such mailbox yet, or held: make it, and see which
                lease = await self.db.run(create_and_take)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(f"cannot open the maildrop of {principal.name}: {exc}") from exc
        if lease is None:
            raise MaildropLocked(f"the maildrop of {principal.name} is leased to another session")
        mailbox, generation, uidvalidity = lease
        try:
            rows = await self.db.run(listing, transaction=False)
        except DatabaseUnavailable as exc:
            with contextlib.suppress(DatabaseUnavailable):  # else it expires by itself
                await self.db.run(
                    lambda conn: conn.execute(_RELEASE, (mailbox, holder, generation)),
                    transaction=False,
                )
            raise StoreUnavailable(f"cannot list the maildrop of {principal.name}: {exc}") from exc
        messages = tuple(
            [
                MessageInfo(uidl or uidl_for(uid, uidvalidity), size, PgRef(uid, stored))
                for uid, size, stored, uidl in rows
            ]
        )
        return PostgresMaildrop(
            self, name=principal.name, mailbox=mailbox, holder=holder, generation=generation,
            messages=messages,
        )  # fmt: skip

    # ---- MailSink --------------------------------------------------------------------------

    def where(self, principal: Principal) -> str:
        return f"PostgreSQL mailbox {principal.name}"

    def create(self, principal: Principal, owner: tuple[int, int] | None = None) -> str:
        self._blocking(lambda conn: conn.execute(_NEW_MAILBOX, (principal.name, new_uidvalidity())))
        return self.where(principal)

    def deliver(self, principal: Principal, chunks: Iterable[bytes], quota: Quota) -> str:
        return self.db.run_blocking(
            lambda conn: self.store_message(conn, principal.name, chunks, quota)
        )

    async def store_message(
        self,
        conn: psycopg.AsyncConnection[Any],
        name: str,
        chunks: Iterable[bytes],
        quota: Quota,
        *,
        uidl: str | None = None,
        size: int | None = None,
    ) -> str:
        """One message in this transaction (the caller commits it): its UID, then its
        chunks, then the quota check, with the mailbox row locked throughout so that
        deliveries to one mailbox are counted one after the other. A migrated message keeps
        the `uidl` and `size` its old server announced."""
        await conn.execute(_NEW_MAILBOX, (name, new_uidvalidity()))
        cur = await conn.execute(
            "UPDATE pop3d_mailboxes SET next_uid = next_uid + 1 WHERE name = %s "
            "RETURNING id, next_uid - 1, uidvalidity",
            (name,),
        )
        row = await cur.fetchone()
        assert row is not None, "made just before"
        mailbox, uid, uidvalidity = row
        await conn.execute(
            "INSERT INTO pop3d_messages (mailbox, uid, size, stored, uidl) "
            "VALUES (%s, %s, 0, 0, %s)",
            (mailbox, uid, uidl),
        )
        wire = WireSizeCounter()
        stored = seq = 0
        pending = bytearray()
        async with conn.cursor() as cursor:
            for chunk in itertools.chain(chunks, [b""]):
                pending += chunk
                wire.feed(chunk)
                while len(pending) >= CHUNK_SIZE or (not chunk and pending):
                    piece = bytes(pending[:CHUNK_SIZE])
                    del pending[:CHUNK_SIZE]
                    await cursor.execute(
                        "INSERT INTO pop3d_chunks (mailbox, uid, seq, data) "
                        "VALUES (%s, %s, %s, %s)",
                        (mailbox, uid, seq, piece),
                    )
                    stored += len(piece)
                    seq += 1
        size = wire.finish() if size is None else size
        await conn.execute(
            "UPDATE pop3d_messages SET size = %s, stored = %s WHERE mailbox = %s AND uid = %s",
            (size, stored, mailbox, uid),
        )
        if quota.storage or quota.messages:
            cur = await conn.execute(
                "SELECT coalesce(sum(stored), 0), count(*) FROM pop3d_messages WHERE mailbox = %s",
                (mailbox,),
            )
            total = await cur.fetchone()
            assert total is not None
            if quota.exceeded(int(total[0]), int(total[1])):
                raise QuotaExceeded(f"{name} is over quota")
        return uidl or uidl_for(uid, uidvalidity)

    def usage(self, principal: Principal) -> tuple[int, int]:
        async def count(conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
            cur = await conn.execute(
                "SELECT coalesce(sum(m.stored), 0), count(m.uid) FROM pop3d_mailboxes b "
                "JOIN pop3d_messages m ON m.mailbox = b.id WHERE b.name = %s",
                (principal.name,),
            )
            row = await cur.fetchone()
            return (int(row[0]), int(row[1])) if row else (0, 0)

        return self._blocking(count)

    def stats(self, principal: Principal) -> MailboxStats:
        async def look(conn: psycopg.AsyncConnection[Any]) -> MailboxStats:
            cur = await conn.execute(
                "SELECT count(m.uid), coalesce(sum(m.size), 0), min(m.received), "
                "max(m.received) FROM pop3d_mailboxes b JOIN pop3d_messages m "
                "ON m.mailbox = b.id WHERE b.name = %s",
                (principal.name,),
            )
            row = await cur.fetchone()
            assert row is not None

            def seconds(when: datetime.datetime | None) -> float | None:
                return when.timestamp() if when else None

            return MailboxStats(int(row[0]), int(row[1]), seconds(row[2]), seconds(row[3]))

        return self._blocking(look)

    def _blocking(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        try:
            return self.db.run_blocking(work)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc


class PostgresMaildrop:
    """A leased mailbox. Asking for a small message also reads the small ones after it (up
    to READ_AHEAD octets) in the same query, so the RETRs that follow need none."""

    def __init__(
        self,
        store: PostgresStore,
        *,
        name: str,
        mailbox: int,
        holder: str,
        generation: int,
        messages: Sequence[MessageInfo],
    ) -> None:
        self._store = store
        self._db = store.db
        self.name = name
        self.mailbox = mailbox
        self.holder = holder
        self.generation = generation
        self._messages = messages
        self._position: dict[object, int] | None = None
        self._read_ahead: dict[object, bytes] = {}
        self._closed = False
        self._lost: list[Callable[[], None]] = []
        self._renewing = asyncio.get_running_loop().create_task(self._renew())

    @property
    def messages(self) -> Sequence[MessageInfo]:
        return self._messages

    def on_lost(self, callback: Callable[[], None]) -> None:
        self._lost.append(callback)

    def read_now(self, message: MessageInfo) -> bytes | None:
        return self._read_ahead.pop(message.ref, None)

    async def open_message(self, message: MessageInfo) -> PostgresMessageReader:
        ref = message.ref
        assert isinstance(ref, PgRef)
        data = self._read_ahead.pop(ref, None)
        if data is not None:
            return PostgresMessageReader(self, ref, data, ref.chunks)
        if ref.chunks > 1:
            first = await self._chunks(ref, 0)
            return PostgresMessageReader(self, ref, first, READ_CHUNKS)
        wanted = [ref, *self._following_small(message)]
        found = await self._query(
            lambda conn: conn.execute(
                "SELECT uid, data FROM pop3d_chunks WHERE mailbox = %s AND uid = ANY(%s) "
                "AND seq = 0",
                (self.mailbox, [r.uid for r in wanted]),
                binary=True,
            ),
        )
        by_uid = dict(found)
        if ref.uid not in by_uid:
            raise MessageGone(f"message {ref.uid} is no longer in mailbox {self.name}")
        for other in wanted[1:]:
            if other.uid in by_uid:
                self._read_ahead[other] = bytes(by_uid[other.uid])
        return PostgresMessageReader(self, ref, bytes(by_uid[ref.uid]), 1)

    def _following_small(self, message: MessageInfo) -> list[PgRef]:
        if self._position is None:
            self._position = {m.ref: i for i, m in enumerate(self._messages)}
        budget, refs = READ_AHEAD, []
        for following in self._messages[self._position[message.ref] + 1 :]:
            ref = following.ref
            assert isinstance(ref, PgRef)
            if ref.chunks > 1 or ref.stored > budget or ref in self._read_ahead:
                break
            refs.append(ref)
            budget -= ref.stored
        return refs

    async def _chunks(self, ref: PgRef, start: int) -> bytes:
        rows = await self._query(
            lambda conn: conn.execute(
                "SELECT data FROM pop3d_chunks WHERE mailbox = %s AND uid = %s "
                "AND seq >= %s AND seq < %s ORDER BY seq",
                (self.mailbox, ref.uid, start, start + READ_CHUNKS),
                binary=True,
            ),
        )
        if not rows and start == 0:
            raise MessageGone(f"message {ref.uid} is no longer in mailbox {self.name}")
        return b"".join(bytes(row[0]) for row in rows)

    async def _query(self, execute: Callable[[Any], Any]) -> list[Any]:
        """Rows of a read; chunks are asked for in binary (text sends an octet as two hex
        digits)."""

        async def run(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = await execute(conn)
            return list(await cur.fetchall())

        try:
            return await self._db.run(run, transaction=False)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(f"cannot read mailbox {self.name}: {exc}") from exc

    async def expunge(self, messages: Sequence[MessageInfo]) -> ExpungeResult:
        uids = []
        for message in messages:
            assert isinstance(message.ref, PgRef)
            uids.append(message.ref.uid)

        async def delete(conn: psycopg.AsyncConnection[Any]) -> int:
            owned = await conn.execute(_OWNED, (self.mailbox, self.holder, self.generation))
            if await owned.fetchone() is None:
                raise LockLost(
                    f"the lease of mailbox {self.name} was lost to another session: nothing deleted"
                )
            cur = await conn.execute(
                "DELETE FROM pop3d_messages WHERE mailbox = %s AND uid = ANY(%s) RETURNING uid",
                (self.mailbox, uids),
            )
            return len(await cur.fetchall())

        try:
            removed = await self._db.run(delete)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(f"cannot expunge mailbox {self.name}: {exc}") from exc
        return ExpungeResult(removed, len(uids) - removed, 0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._renewing.cancel()
        release = (self.mailbox, self.holder, self.generation)
        for attempt in (1, 2):  # again on a fresh connection: the pool drops a dead one
            try:
                await self._db.run(
                    lambda conn: conn.execute(_RELEASE, release), transaction=False
                )
                return
            except DatabaseUnavailable as exc:
                if attempt == 2:  # it expires by itself
                    log.warning("cannot release the lease of mailbox %s: %s", self.name, exc)

    async def _renew(self) -> None:
        """Every third of the lease's life; if it is gone, or cannot be renewed before it
        would expire, the session is told to end."""
        ttl = self._store.lease_ttl
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(ttl / 3 if time.monotonic() - renewed < ttl / 3 else 1.0)
            try:
                held = await self._db.run(self._renew_once, transaction=False)
            except DatabaseUnavailable as exc:
                if time.monotonic() - renewed < ttl:
                    log.warning("cannot renew the lease of mailbox %s: %s", self.name, exc)
                    continue
                held = False
            if held:
                renewed = time.monotonic()
                continue
            log.error(
                "the lease of mailbox %s was lost: its session ends, nothing deleted", self.name
            )
            for callback in self._lost:
                with contextlib.suppress(Exception):
                    callback()
            return

    async def _renew_once(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        cur = await conn.execute(
            _RENEW, (self._store.lease_ttl, self.mailbox, self.holder, self.generation)
        )
        return cur.rowcount == 1


class PostgresMessageReader:
    """Chunks of one message: the first was read when it was opened. While one piece is
    sent, the next is already being read (one piece ahead: memory stays bounded)."""

    def __init__(self, drop: PostgresMaildrop, ref: PgRef, first: bytes, next_seq: int) -> None:
        self._drop = drop
        self._ref = ref
        self._pending: bytes | None = first
        self._next = next_seq
        self._ahead: asyncio.Task[bytes] | None = None

    async def read(self) -> bytes:
        if self._pending is not None:
            chunk, self._pending = self._pending, None
        elif self._ahead is not None:
            chunk, self._ahead = await self._ahead, None
        else:
            return b""
        if self._next < self._ref.chunks:
            self._ahead = asyncio.get_running_loop().create_task(
                self._drop._chunks(self._ref, self._next)
            )
            self._next += READ_CHUNKS
        return chunk

    async def close(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreUnavailable, MessageGone):
                await self._ahead
            self._ahead = None


def content_digest(data: bytes) -> str:
    """What `pop3d migrate --verify` compares."""
    return hashlib.sha256(data).hexdigest()
