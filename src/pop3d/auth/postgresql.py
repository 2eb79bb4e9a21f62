"""Users in PostgreSQL (`pop3d_users`): the same `{SCHEME}` passwords as a passwd-file, a home,
and a quota, shared by every node.

Lookups block (they run on the authentication pool, waiting on the database's loop). An answer
is kept for a second, so a login repeated at once costs no query and a changed password
applies within a second, as with a passwd-file. The census of password schemes (what decides
the SASL mechanisms offered) is a GROUP BY over all users: it is kept for CENSUS_FOR.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from ..postgres import Database, DatabaseUnavailable
from ..quota import Quota
from .base import AuthUnavailable, SchemeCensus, UserEditError, UserEntry
from .schemes import StoredPassword, UnknownScheme, hash_password

T = TypeVar("T")

FRESH_FOR = 1.0
CENSUS_FOR = 30.0
CACHED = 10_000  # users whose last answer is kept

_SCHEMES = """
SELECT coalesce(upper(split_part(substring(password FROM '^\\{([^}]*)\\}'), '.', 1)), 'CRYPT'),
       count(*)
  FROM pop3d_users WHERE password IS NOT NULL AND password <> '' GROUP BY 1 ORDER BY 2 DESC, 1
"""


def _entry(row: tuple[Any, ...]) -> UserEntry:
    name, password, home, storage, messages = row
    try:
        stored = StoredPassword.parse(password) if password else None
    except UnknownScheme:
        stored = None  # as a passwd-file line that cannot be used: no login with it
    quota = Quota(storage or 0, messages or 0) if storage or messages else None
    return UserEntry(name, stored, home, quota)


class PostgresUsers:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._answers: OrderedDict[str, tuple[float, UserEntry | None]] = OrderedDict()
        self._census: tuple[float, SchemeCensus] | None = None
        self._dummy: StoredPassword | None = None

    def lookup(self, name: str) -> UserEntry | None:
        async def find(conn: psycopg.AsyncConnection[Any]) -> UserEntry | None:
            cur = await conn.execute(
                "SELECT name, password, home, quota_storage, quota_messages FROM pop3d_users "
                "WHERE name = %s",
                (name,),
            )
            row = await cur.fetchone()
            return _entry(row) if row else None

        entry = self._blocking(find, transaction=False)
        with self._lock:
            self._answers[name] = (time.monotonic(), entry)
            self._answers.move_to_end(name)
            while len(self._answers) > CACHED:
                self._answers.popitem(last=False)
        return entry

    def recent(self, name: str) -> tuple[UserEntry | None, StoredPassword] | None:
        answer = self._answers.get(name)
        dummy = self._dummy
        if answer is None or dummy is None or time.monotonic() - answer[0] > FRESH_FOR:
            return None
        return answer[1], dummy

    def timing_dummy(self) -> StoredPassword:
        if self._dummy is None:
            self.census()  # makes it
        assert self._dummy is not None
        return self._dummy

    def census(self) -> SchemeCensus:
        kept = self._census
        if kept is not None and time.monotonic() - kept[0] < CENSUS_FOR:
            return kept[1]

        async def count(conn: psycopg.AsyncConnection[Any]) -> SchemeCensus:
            cur = await conn.execute(_SCHEMES)
            return SchemeCensus(tuple((str(s), int(n)) for s, n in await cur.fetchall()))

        census = self._blocking(count)
        self._census = (time.monotonic(), census)
        if self._dummy is None:
            # Made here, off the event loop (the server reads the census on a thread), and
            # before the first login, so that `recent` answers from the start.
            scheme = census.counts[0][0] if census.counts else "ARGON2ID"
            if scheme not in ("ARGON2ID", "SCRAM-SHA-256", "SHA512-CRYPT", "BLF-CRYPT"):
                scheme = "ARGON2ID"
            self._dummy = StoredPassword.parse(hash_password(scheme, os.urandom(16).hex().encode()))
        return census

    def users(self) -> list[UserEntry]:
        async def every(conn: psycopg.AsyncConnection[Any]) -> list[UserEntry]:
            cur = await conn.execute(
                "SELECT name, password, home, quota_storage, quota_messages FROM pop3d_users "
                "ORDER BY name"
            )
            return [_entry(row) for row in await cur.fetchall()]

        return self._blocking(every)

    def check(self) -> int:
        return len(self.users())

    # ---- editing (pop3d user add|passwd|delete, pop3d migrate) -----------------------------

    def add(self, name: str, password_field: str) -> None:
        if not self.put(UserEntry(name, None), password_field):
            raise UserEditError(f"user {name} already exists")

    def put(self, entry: UserEntry, password_field: str | None, *, replace: bool = False) -> bool:
        """Add a user; False if there was one (then it is changed only with `replace`)."""
        return self._blocking(self.insert(entry, password_field, replace=replace))

    @staticmethod
    def insert(
        entry: UserEntry, password_field: str | None, *, replace: bool = False
    ) -> Callable[[psycopg.AsyncConnection[Any]], Awaitable[bool]]:
        """`put` as work for `Database.run`, for code on the database's loop."""
        quota = entry.quota or Quota()

        async def insert(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                "INSERT INTO pop3d_users (name, password, home, quota_storage, quota_messages) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO "
                + ("UPDATE SET password = EXCLUDED.password, home = EXCLUDED.home, "
                   "quota_storage = EXCLUDED.quota_storage, "
                   "quota_messages = EXCLUDED.quota_messages" if replace else "NOTHING"),
                (entry.name, password_field, entry.home, quota.storage or None,
                 quota.messages or None),
            )  # fmt: skip
            return cur.rowcount == 1

        return insert

    def set_password(self, name: str, password_field: str) -> None:
        async def update(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                "UPDATE pop3d_users SET password = %s WHERE name = %s", (password_field, name)
            )
            return cur.rowcount

        if self._blocking(update) == 0:
            raise UserEditError(f"no user {name}")

    def delete(self, name: str) -> None:
        async def remove(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute("DELETE FROM pop3d_users WHERE name = %s", (name,))
            return cur.rowcount

        if self._blocking(remove) == 0:
            raise UserEditError(f"no user {name}")

    def _blocking(
        self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *,
        transaction: bool = True,
    ) -> T:
        try:
            return self.db.run_blocking(work, transaction=transaction)
        except DatabaseUnavailable as exc:
            raise AuthUnavailable(f"the user database is unavailable: {exc}") from exc
