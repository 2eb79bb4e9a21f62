"""Checking credentials against a user database, off the event loop.

All verification runs in one bounded thread pool of its own, so a storm of logins (each hash
costs milliseconds of CPU) queues there and cannot starve the sessions already logged in.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

from ..principal import Principal, is_safe_user_name
from ..protocol.events import ApopCredentials, Credentials, PasswordCredentials
from .base import UserDatabase, UserEntry
from .oauth2 import TokenVerifier
from .schemes import ScramEntry

T = TypeVar("T")


class Authenticator:
    def __init__(
        self,
        users: UserDatabase,
        executor: Executor | None = None,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self.users = users
        self.tokens = tokens  # OAuth 2.0 bearer tokens, when [oauth2] is set
        self._executor = executor

    async def login(self, credentials: Credentials) -> Principal | None:
        """The principal, or None for wrong credentials; raises AuthUnavailable.

        A password whose check costs microseconds (PLAIN, a single digest), of a user the
        database knows without I/O, is checked at once; everything else on the pool. Unknown
        users take the same path as the stand-in password, so timing tells nothing.
        """
        if isinstance(credentials, PasswordCredentials):
            known = (
                self.users.recent(credentials.user) if is_safe_user_name(credentials.user) else None
            )
            if known is not None:
                entry, dummy = known
                stored = entry.password if entry and entry.password else dummy
                if not stored.costly:
                    return self.verify_password(entry, credentials.password)
        return await self.blocking(self.login_blocking, credentials)

    async def blocking(self, func: Callable[..., T], *args: Any) -> T:
        """Run what blocks or costs (lookups, hashes) on the authentication pool."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def login_blocking(self, credentials: Credentials) -> Principal | None:
        entry = self._find(credentials.user)
        match credentials:
            case PasswordCredentials(_, password):
                return self.verify_password(entry, password)
            case ApopCredentials(_, challenge, digest):
                secret = entry.password.plaintext() if entry and entry.password else None
                if entry is None or secret is None:
                    return None
                expected = hashlib.md5(challenge.encode() + secret, usedforsecurity=False)
                return (
                    entry.principal() if hmac.compare_digest(expected.hexdigest(), digest) else None
                )

    def verify_password(self, entry: UserEntry | None, password: bytes) -> Principal | None:
        """Costs the same for an unknown user as for a wrong password."""
        if entry is None or entry.password is None:
            self.users.timing_dummy().verify(password)
            return None
        return entry.principal() if entry.password.verify(password) else None

    def principal_for(self, name: str) -> Principal | None:
        entry = self._find(name)
        return entry.principal() if entry else None

    def scram_entry(self, name: str, mechanism: str) -> ScramEntry | None:
        """The user's keys for a SCRAM mechanism: stored ones, or made from a {PLAIN} password."""
        entry = self._find(name)
        if entry is None or entry.password is None:
            return None
        if entry.password.scheme == mechanism:
            return ScramEntry.parse(entry.password.value)
        secret = entry.password.plaintext()
        return ScramEntry.from_password(mechanism, secret) if secret is not None else None

    def _find(self, name: str) -> UserEntry | None:
        return self.users.lookup(name) if is_safe_user_name(name) else None
