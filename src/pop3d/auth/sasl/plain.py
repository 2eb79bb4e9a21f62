"""PLAIN (RFC 4616): one message, `[authzid] NUL authcid NUL password`."""

from __future__ import annotations

from typing import ClassVar

from ...protocol.events import AuthFailure, PasswordCredentials
from ..authenticator import Authenticator
from .base import Challenge, Failure, Step, Success, decode_utf8


class Plain:
    name: ClassVar[str] = "PLAIN"
    plaintext: ClassVar[bool] = True
    completes_from: ClassVar[frozenset[str] | None] = None
    needs_oauth2: ClassVar[bool] = False

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
        self._asked = False

    async def step(self, response: bytes | None) -> Step:
        if response is None and not self._asked:
            self._asked = True
            return Challenge(b"")  # no initial response: ask for it with an empty challenge
        parts = (response or b"").split(b"\0")
        if len(parts) != 3 or not parts[1]:
            return Failure(AuthFailure.MALFORMED)
        authzid, authcid = decode_utf8(parts[0]), decode_utf8(parts[1])
        if authzid is None or authcid is None:
            return Failure(AuthFailure.MALFORMED)
        principal = await self._authenticator.login(PasswordCredentials(authcid, parts[2]))
        if principal is None or authzid not in ("", principal.name):
            # Acting as another user (authzid) is not offered: master users are not a feature.
            return Failure(AuthFailure.CREDENTIALS, authcid)
        return Success(principal)
