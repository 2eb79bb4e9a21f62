"""LOGIN (draft-murchison-sasl-login): "Username:" then "Password:", as old Outlook does it."""

from __future__ import annotations

from typing import ClassVar

from ...protocol.events import AuthFailure, PasswordCredentials
from ..authenticator import Authenticator
from .base import Challenge, Failure, Step, Success, decode_utf8


class Login:
    name: ClassVar[str] = "LOGIN"
    plaintext: ClassVar[bool] = True
    completes_from: ClassVar[frozenset[str] | None] = None
    needs_oauth2: ClassVar[bool] = False

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
        self._user: str | None = None

    async def step(self, response: bytes | None) -> Step:
        if self._user is None:
            if response is None:  # no initial response: ask for the name
                return Challenge(b"Username:")
            user = decode_utf8(response)
            if not user:
                return Failure(AuthFailure.MALFORMED)
            self._user = user
            return Challenge(b"Password:")
        principal = await self._authenticator.login(
            PasswordCredentials(self._user, response or b"")
        )
        if principal is None:
            return Failure(AuthFailure.CREDENTIALS, self._user)
        return Success(principal)
