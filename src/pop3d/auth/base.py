"""The user database interface and what it hands back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from ..principal import Principal
from ..quota import Quota
from .schemes import StoredPassword


class AuthUnavailable(Exception):
    """The user database cannot be consulted now (-ERR [SYS/TEMP]); the text is for the log."""


class UserEditError(Exception):
    """An edit of the users that cannot be made (the user exists, or does not)."""


@dataclass(frozen=True, slots=True)
class UserEntry:
    name: str
    password: StoredPassword | None  # None: this user cannot log in with a password
    home: str | None = None
    quota: Quota | None = None  # from the extra fields; None: the configured default applies

    def principal(self) -> Principal:
        return Principal(self.name, self.home)


@dataclass(frozen=True, slots=True)
class SchemeCensus:
    """How many users keep their password in each scheme: what decides which SASL
    mechanisms that need a stored secret can be offered."""

    counts: tuple[tuple[str, int], ...] = ()  # (scheme, users), most common first

    @classmethod
    def of(cls, entries: Iterable[UserEntry]) -> SchemeCensus:
        counted = Counter(e.password.scheme for e in entries if e.password is not None)
        return cls(tuple(counted.most_common()))

    def without(self, schemes: Collection[str]) -> tuple[tuple[str, int], ...]:
        """The schemes not in `schemes`, with their users."""
        return tuple((scheme, n) for scheme, n in self.counts if scheme not in schemes)


class UserDatabase(Protocol):
    """Blocking lookups: called from the authentication thread pool, never on the event loop."""

    def lookup(self, name: str) -> UserEntry | None:
        """The user, None if unknown; raises AuthUnavailable if the database is unreadable."""
        ...

    def recent(self, name: str) -> tuple[UserEntry | None, StoredPassword] | None:
        """Without I/O: (the user or None, the stand-in password), if the database has been
        checked within the last second; None when only a blocking lookup can tell."""
        ...

    def timing_dummy(self) -> StoredPassword:
        """A password of the kind most users have, verified for unknown users so that they
        cost the same time as known ones."""
        ...

    def census(self) -> SchemeCensus:
        """The password schemes of the users as the database holds them now (re-read if it
        changed); raises AuthUnavailable."""
        ...
