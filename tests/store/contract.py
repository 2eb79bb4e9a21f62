"""The contract every mail store backend passes. A backend's test module provides a
`backend` fixture returning a `Backend`: the store plus a way to put mail in."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from pop3d.principal import Principal
from pop3d.protocol.dotstuff import wire_size
from pop3d.protocol.maildrop import MessageInfo
from pop3d.store.base import Maildrop, MaildropLocked, Mailstore, MessageGone

T = TypeVar("T")
ALICE = Principal("alice")


# One event loop for every check of a run: a store may hold what is bound to a loop (a
# PostgreSQL connection pool) from one check to the next.
_runner = asyncio.Runner()


def arun(coro: Coroutine[Any, Any, T]) -> T:
    return _runner.run(coro)


@dataclass
class Backend:
    store: Mailstore
    add: Callable[[Principal, bytes], None]  # deliver one message
    remove_behind_our_back: Callable[[Principal, MessageInfo], None]


async def read_all(maildrop: Maildrop, message: MessageInfo) -> bytes:
    reader = await maildrop.open_message(message)
    chunks = []
    while chunk := await reader.read():
        chunks.append(chunk)
    await reader.close()
    return b"".join(chunks)


class StoreContract:
    def test_lists_messages_in_delivery_order(self, backend: Backend) -> None:
        bodies = [b"Subject: %d\n\nbody %d\n" % (i, i) for i in range(5)]
        for body in bodies:
            backend.add(ALICE, body)

        async def check() -> None:
            drop = await backend.store.open(ALICE)
            try:
                assert [await read_all(drop, m) for m in drop.messages] == bodies
                assert [m.size for m in drop.messages] == [wire_size([b]) for b in bodies]
            finally:
                await drop.close()

        arun(check())

    def test_an_empty_or_new_maildrop_opens(self, backend: Backend) -> None:
        async def check() -> None:
            drop = await backend.store.open(Principal("nobody-yet"))
            assert list(drop.messages) == []
            await drop.close()

        arun(check())

    def test_uidls_are_valid_unique_and_stable(self, backend: Backend) -> None:
        for i in range(3):
            backend.add(ALICE, b"m%d\n" % i)

        async def uidls() -> list[str]:
            drop = await backend.store.open(ALICE)
            try:
                return [m.uidl for m in drop.messages]
            finally:
                await drop.close()

        first = arun(uidls())
        assert len(set(first)) == 3
        assert all(re.fullmatch(r"[\x21-\x7e]{1,70}", u) for u in first)
        assert arun(uidls()) == first

    def test_the_lock_is_exclusive_until_closed(self, backend: Backend) -> None:
        async def check() -> None:
            drop = await backend.store.open(ALICE)
            with pytest.raises(MaildropLocked):
                await backend.store.open(ALICE)
            other = await backend.store.open(Principal("bob"))  # other users are independent
            await other.close()
            await drop.close()
            await drop.close()  # idempotent
            again = await backend.store.open(ALICE)
            await again.close()

        arun(check())

    def test_snapshot_ignores_mail_that_arrives_during_the_session(self, backend: Backend) -> None:
        backend.add(ALICE, b"one\n")

        async def check() -> None:
            drop = await backend.store.open(ALICE)
            backend.add(ALICE, b"two\n")
            assert len(drop.messages) == 1
            await drop.close()
            drop = await backend.store.open(ALICE)
            assert len(drop.messages) == 2
            await drop.close()

        arun(check())

    def test_expunge_removes_only_what_it_is_given(self, backend: Backend) -> None:
        for i in range(3):
            backend.add(ALICE, b"m%d\n" % i)

        async def check() -> None:
            drop = await backend.store.open(ALICE)
            keep = drop.messages[1]
            result = await drop.expunge([drop.messages[0], drop.messages[2]])
            assert (result.removed, result.vanished, result.failed) == (2, 0, 0)
            await drop.close()
            drop = await backend.store.open(ALICE)
            assert [m.uidl for m in drop.messages] == [keep.uidl]
            await drop.close()

        arun(check())

    def test_closing_without_expunge_changes_nothing(self, backend: Backend) -> None:
        backend.add(ALICE, b"m\n")

        async def check() -> int:
            drop = await backend.store.open(ALICE)
            await read_all(drop, drop.messages[0])
            await drop.close()
            drop = await backend.store.open(ALICE)
            count = len(drop.messages)
            await drop.close()
            return count

        assert arun(check()) == 1

    def test_a_message_removed_by_someone_else(self, backend: Backend) -> None:
        backend.add(ALICE, b"m\n")
        backend.add(ALICE, b"n\n")

        async def check() -> None:
            drop = await backend.store.open(ALICE)
            gone = drop.messages[0]
            backend.remove_behind_our_back(ALICE, gone)
            with pytest.raises(MessageGone):
                await drop.open_message(gone)
            result = await drop.expunge(list(drop.messages))
            assert (result.removed, result.vanished, result.failed) == (1, 1, 0)
            await drop.close()

        arun(check())

    def test_large_message_streams_in_chunks(self, backend: Backend) -> None:
        streams_in_chunks(backend, b"Subject: big\n\n" + b"0123456789abcdef" * (1 << 16) * 3)


def streams_in_chunks(backend: Backend, body: bytes) -> None:
    """`body` delivered, then read back whole in pieces of at most 1 MiB."""
    backend.add(ALICE, body)

    async def check() -> list[int]:
        drop = await backend.store.open(ALICE)
        reader = await drop.open_message(drop.messages[0])
        sizes = []
        while chunk := await reader.read():
            sizes.append(len(chunk))
        await reader.close()
        await drop.close()
        return sizes

    sizes = arun(check())
    assert sum(sizes) == len(body)
    assert max(sizes) <= 1 << 20
