"""The PostgreSQL backend: the store contract, and what only it has (leases, fencing, UIDs)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from pop3d.config import PostgresConfig
from pop3d.postgres import Database, database_in_thread, migrate
from pop3d.principal import Principal
from pop3d.protocol.maildrop import MessageInfo
from pop3d.quota import Quota
from pop3d.store.base import LockLost, MaildropLocked, QuotaExceeded
from pop3d.store.postgresql import PgRef, PostgresStore
from tests.store.contract import ALICE, Backend, StoreContract, arun, read_all


@pytest.fixture
def helper(pg_dsn: str) -> Iterator[PostgresStore]:
    """A second store, on a thread of its own, to put mail in from anywhere (as an LMTP
    delivery on another node would) and to look behind the store under test."""
    with database_in_thread(PostgresConfig(dsn=pg_dsn, lease_ttl=3)) as db:
        db.run_blocking(migrate)
        yield PostgresStore(db, 3)


@pytest.fixture
def store(pg_dsn: str, helper: PostgresStore) -> Iterator[PostgresStore]:
    db = Database(PostgresConfig(dsn=pg_dsn, lease_ttl=3, pool_max=4))
    arun(db.open())
    yield PostgresStore(db, 3)
    arun(db.close())


@pytest.fixture
def backend(store: PostgresStore, helper: PostgresStore) -> Backend:
    def remove(principal: Principal, message: MessageInfo) -> None:
        ref = message.ref
        assert isinstance(ref, PgRef)
        helper.db.run_blocking(
            lambda conn: conn.execute(
                "DELETE FROM pop3d_messages WHERE uid = %s AND mailbox = "
                "(SELECT id FROM pop3d_mailboxes WHERE name = %s)",
                (ref.uid, principal.name),
            )
        )

    return Backend(store, lambda p, data: helper.deliver(p, [data], Quota()) and None, remove)


class TestPostgresContract(StoreContract):
    pass


def test_uidls_are_dovecot_s_form_and_uids_only_grow(
    store: PostgresStore, helper: PostgresStore
) -> None:
    for i in range(3):
        helper.deliver(ALICE, [b"m%d\n" % i], Quota())

    async def listing() -> list[MessageInfo]:
        drop = await store.open(ALICE)
        messages = list(drop.messages)
        await drop.expunge(messages[:1])
        await drop.close()
        return messages

    first = arun(listing())
    uidvalidity = first[0].uidl[8:]
    assert [m.uidl for m in first] == [f"{uid:08x}{uidvalidity}" for uid in (1, 2, 3)]
    helper.deliver(ALICE, [b"m3\n"], Quota())
    assert [m.uidl[:8] for m in arun(listing())] == ["00000002", "00000003", "00000004"]


def test_a_lease_held_elsewhere_refuses_then_expires(
    store: PostgresStore, helper: PostgresStore
) -> None:
    async def take_and_freeze() -> None:
        drop = await store.open(ALICE)
        drop._renewing.cancel()  # as if the node froze: the lease is not renewed

    arun(take_and_freeze())
    with pytest.raises(MaildropLocked):
        arun(store.open(ALICE))

    async def later() -> int:
        await asyncio.sleep(3.2)
        drop = await store.open(ALICE)  # expired: taken over, one generation more
        generation = drop.generation
        await drop.close()
        return generation

    assert arun(later()) == 2


def test_a_taken_over_lease_fences_the_old_session_s_deletions(
    store: PostgresStore, helper: PostgresStore
) -> None:
    for i in range(3):
        helper.deliver(ALICE, [b"m%d\n" % i], Quota())

    async def check() -> None:
        old = await store.open(ALICE)
        old._renewing.cancel()
        lost = []
        old.on_lost(lambda: lost.append(True))
        await asyncio.sleep(3.2)
        new = await store.open(ALICE)  # another session takes the expired lease over
        result = await new.expunge([new.messages[0]])
        assert result.removed == 1
        await new.close()
        with pytest.raises(LockLost):
            await old.expunge(list(old.messages))  # nothing of the old session commits
        await old.close()
        again = await store.open(ALICE)
        assert len(again.messages) == 2
        await again.close()

    arun(check())


def test_an_unrenewed_lease_ends_its_session(pg_dsn: str, helper: PostgresStore) -> None:
    async def check() -> None:
        db = Database(PostgresConfig(dsn=pg_dsn, lease_ttl=3))
        await db.open()
        mine = PostgresStore(db, 3)
        drop = await mine.open(ALICE)
        lost = asyncio.Event()
        drop.on_lost(lost.set)
        # The lease is taken from under it (as by a node that saw it expire).
        await db.run(
            lambda conn: conn.execute(
                "UPDATE pop3d_leases SET holder = 'other:1', generation = generation + 1"
            )
        )
        await asyncio.wait_for(lost.wait(), 5)
        await drop.close()
        await db.close()

    arun(check())


def test_quota_is_checked_in_the_delivery_transaction(helper: PostgresStore) -> None:
    helper.deliver(ALICE, [b"x" * 100], Quota(storage=150))
    with pytest.raises(QuotaExceeded):
        helper.deliver(ALICE, [b"y" * 100], Quota(storage=150))
    assert helper.usage(ALICE) == (100, 1)  # the refused one left nothing
    with pytest.raises(QuotaExceeded):
        helper.deliver(ALICE, [b"z"], Quota(messages=1))
    assert helper.stats(ALICE).messages == 1


def test_a_large_message_is_stored_in_chunks_and_read_back_whole(
    store: PostgresStore, helper: PostgresStore
) -> None:
    body = bytes(range(256)) * (5 * 1024 * 4)  # 5 MiB, every octet value
    helper.deliver(ALICE, [body[i : i + 65536] for i in range(0, len(body), 65536)], Quota())

    async def check() -> bytes:
        drop = await store.open(ALICE)
        data = await read_all(drop, drop.messages[0])
        await drop.close()
        return data

    assert arun(check()) == body
