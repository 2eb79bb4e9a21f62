"""PostgreSQL: one connection pool per process, and the schema.

`Database` holds the process's one `psycopg_pool.AsyncConnectionPool`, on one event loop (the
server's, or a thread of its own for a command). Sessions await it there; code that blocks
(password checks on the authentication pool, deliveries on the I/O pool, the `pop3d` admin
commands) hands it a coroutine with `run_blocking`. Every value is a bound parameter, and
no statement leaves session state behind (no advisory locks held across transactions, no
SET outside a transaction), so PgBouncer in transaction mode can sit in between.

The schema is a numbered list of migrations (`MIGRATIONS`), each applied once, in one
transaction with `pop3d_schema`, under a transaction-level advisory lock: `pop3d db init`
on two nodes at once is safe, and running it again changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from .config import PostgresConfig

log = logging.getLogger("pop3d.postgresql")

T = TypeVar("T")

# pg_advisory_xact_lock's key for migrations: "pop3d" in ASCII.
MIGRATION_LOCK = 0x706F703364
CHUNK_SIZE = 256 * 1024  # octets of a message per row of pop3d_chunks

MIGRATIONS: tuple[str, ...] = (
    # 1: users, mailboxes, messages in chunk rows, leases.
    """
    CREATE TABLE pop3d_users (
        name text PRIMARY KEY,
        password text,                  -- {SCHEME}value, as in a passwd-file; NULL: none
        home text,
        quota_storage bigint,           -- NULL: the configured default
        quota_messages bigint
    );
    CREATE TABLE pop3d_mailboxes (
        id bigserial PRIMARY KEY,
        name text NOT NULL UNIQUE,      -- the user's name (the mail stays when a user goes)
        uidvalidity bigint NOT NULL,
        next_uid bigint NOT NULL DEFAULT 1
    );
    CREATE TABLE pop3d_messages (
        mailbox bigint NOT NULL REFERENCES pop3d_mailboxes (id) ON DELETE CASCADE,
        uid bigint NOT NULL,
        size bigint NOT NULL,           -- octets as POP3 sends it: CRLF, before stuffing
        stored bigint NOT NULL,         -- octets in pop3d_chunks
        received timestamptz NOT NULL DEFAULT now(),
        uidl text,                      -- the UIDL an earlier server gave it, if migrated
        PRIMARY KEY (mailbox, uid)
    );
    CREATE UNIQUE INDEX pop3d_messages_uidl ON pop3d_messages (mailbox, uidl)
        WHERE uidl IS NOT NULL;
    CREATE TABLE pop3d_chunks (
        mailbox bigint NOT NULL,
        uid bigint NOT NULL,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (mailbox, uid, seq),
        FOREIGN KEY (mailbox, uid) REFERENCES pop3d_messages ON DELETE CASCADE
    );
    -- Out of line but not compressed: mail is mostly compressed already (base64 of JPEGs
    -- and PDFs), and pglz would cost CPU at every read for little.
    ALTER TABLE pop3d_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE TABLE pop3d_leases (
        mailbox bigint PRIMARY KEY REFERENCES pop3d_mailboxes (id) ON DELETE CASCADE,
        holder text,                    -- node id and session; NULL once released
        generation bigint NOT NULL,     -- one more at every take-over: the fencing token
        expires timestamptz NOT NULL
    );
    """,
)


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached or failed; the text is for the log."""


class Database:
    def __init__(self, config: PostgresConfig) -> None:
        self.config = config
        # Autocommit: a single statement is its own transaction, one round trip with no
        # BEGIN or COMMIT; `run` opens a transaction only where one is needed.
        kwargs: dict[str, Any] = {
            "connect_timeout": int(config.connect_timeout), "autocommit": True,
        }
        if not config.prepared_statements:
            kwargs["prepare_threshold"] = None
        if config.statement_timeout:
            kwargs["options"] = f"-c statement_timeout={int(config.statement_timeout * 1000)}"
        self.pool = psycopg_pool.AsyncConnectionPool(
            config.dsn or "",
            min_size=config.pool_min,
            max_size=config.pool_max,
            kwargs=kwargs,
            timeout=config.connect_timeout,
            open=False,
            name="pop3d",
        )
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        """Open the pool on the running loop. PostgreSQL may be down: the pool keeps trying,
        and until then each use fails with DatabaseUnavailable."""
        self._loop = asyncio.get_running_loop()
        await self.pool.open(wait=False)

    async def close(self) -> None:
        await self.pool.close()

    async def run(
        self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *,
        transaction: bool = True,
    ) -> T:
        """`work(conn)` in a transaction of its own, or (`transaction=False`, for work that is
        one statement) in that statement's own; DatabaseUnavailable when it cannot."""
        try:
            async with self.pool.connection() as conn:
                if not transaction:
                    return await work(conn)
                async with conn.transaction():
                    return await work(conn)
        except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
            raise DatabaseUnavailable(str(exc).strip() or type(exc).__name__) from exc

    def run_blocking(
        self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], *,
        transaction: bool = True,
    ) -> T:
        """`run(work)` from a thread that is not the pool's loop, waiting for it."""
        return self.wait(self.run(work, transaction=transaction))

    def wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the pool's loop from another thread, and wait for it."""
        assert self._loop is not None, "Database.open() first"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


@contextmanager
def database_in_thread(config: PostgresConfig) -> Iterator[Database]:
    """A Database on a loop in a thread of its own, for code that only blocks (a command)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pop3d-postgresql", daemon=True)
    thread.start()
    db = Database(config)
    asyncio.run_coroutine_threadsafe(db.open(), loop).result()
    try:
        yield db
    finally:
        asyncio.run_coroutine_threadsafe(db.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Apply the migrations this database lacks, in this transaction; their numbers."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS pop3d_schema "
        "(version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
    )
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM pop3d_schema")
    row = await cur.fetchone()
    current = row[0] if row else 0
    applied = []
    for version, sql in enumerate(MIGRATIONS, 1):
        if version <= current:
            continue
        await conn.execute(sql.encode())
        await conn.execute("INSERT INTO pop3d_schema (version) VALUES (%s)", (version,))
        applied.append(version)
    return applied


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says PostgreSQL is down or the link to it broke (not a bug of ours)."""
    return isinstance(
        exc, DatabaseUnavailable | psycopg.OperationalError | psycopg_pool.PoolTimeout
    )
