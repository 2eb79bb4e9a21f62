"""Which user database and which mail store a config names, made in one place for the server
and for the commands: a passwd-file or PostgreSQL, Maildirs or PostgreSQL. psycopg is
imported only when PostgreSQL is used (it takes a tenth of a second: `pop3d deliver` runs
once per message)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from .auth.passwd_file import PasswdFile
from .config import Config
from .store.maildir import MaildirStore
from .store.mbox import MboxStore

if TYPE_CHECKING:
    from .auth.postgresql import PostgresUsers
    from .postgres import Database
    from .store.postgresql import PostgresStore

Store: TypeAlias = "MaildirStore | MboxStore | PostgresStore"  # Mailstore and MailSink both
Users: TypeAlias = "PasswdFile | PostgresUsers"  # UserDatabase, and editable


def uses_postgresql(config: Config) -> bool:
    return "postgresql" in (config.store.backend, config.auth.backend)


def load_before_dropping_root(config: Config) -> None:
    """Import psycopg and our PostgreSQL modules now, if the config uses them, while root
    can read anything: the account given up to may not read where Python keeps them."""
    if uses_postgresql(config):
        from . import postgres  # noqa: F401, PLC0415
        from .auth import postgresql  # noqa: F401, PLC0415
        from .store import postgresql as _  # noqa: F401, PLC0415


def user_database(config: Config, db: Database | None, new_file_group: int | None = None) -> Users:
    """`new_file_group`: the group a passwd-file made by an edit gets."""
    if config.auth.backend == "postgresql":
        from .auth.postgresql import PostgresUsers  # noqa: PLC0415 - psycopg only when used

        assert db is not None, "a [postgresql] section is checked at load"
        return PostgresUsers(db)
    return PasswdFile(config.passwd_file, new_file_group)


def mail_store(config: Config, db: Database | None, executor: Executor | None = None) -> Store:
    if config.store.backend == "postgresql":
        from .store.postgresql import PostgresStore  # noqa: PLC0415

        assert db is not None, "a [postgresql] section is checked at load"
        assert config.postgresql is not None
        return PostgresStore(db, config.postgresql.lease_ttl)
    if config.store.backend == "mbox":
        assert config.mbox.path is not None, "checked at load"
        return MboxStore(config.mbox.path, executor, config.mbox.format)
    return MaildirStore(config.maildir_template, executor, config.maildir.uidl_format)


def database(config: Config) -> Database | None:
    """The process's PostgreSQL pool, when the config uses PostgreSQL (not opened yet)."""
    if not uses_postgresql(config):
        return None
    from .postgres import Database  # noqa: PLC0415

    assert config.postgresql is not None, "checked at load"
    return Database(config.postgresql)


@dataclass
class Backends:
    users: Users
    store: Store
    db: Database | None


@contextmanager
def opened(config: Config, new_file_group: int | None = None) -> Iterator[Backends]:
    """The config's users and store for a command, with PostgreSQL on a thread of its own
    when they need it."""
    if not uses_postgresql(config):
        users = user_database(config, None, new_file_group)
        yield Backends(users, mail_store(config, None), None)
        return
    from .postgres import database_in_thread  # noqa: PLC0415

    assert config.postgresql is not None
    with database_in_thread(config.postgresql) as db:
        yield Backends(user_database(config, db), mail_store(config, db), db)
