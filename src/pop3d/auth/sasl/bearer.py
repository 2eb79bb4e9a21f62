"""What OAUTHBEARER and XOAUTH2 share: a bearer token instead of a password.

The client sends a token (and perhaps the user it is for); the provider vouches for it (see
`pop3d.auth.oauth2`); the user it names must be one the user database knows, so quotas and
Maildir paths still come from there. A refused token is answered with a last challenge that
carries the mechanism's JSON error, and only the client's acknowledgement of it ends the
exchange as a failed login (RFC 7628 section 3.2.2; XOAUTH2 does the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...protocol.events import AuthFailure
from ..authenticator import Authenticator
from ..oauth2 import TokenRejected, TokenUnavailable
from .base import Challenge, Failure, Step, Success


@dataclass(frozen=True, slots=True)
class BearerRequest:
    user: str | None  # the user the client says the token is for, if it says
    token: str


class BearerExchange:
    """The exchange; a mechanism supplies `parse`, `error` and `acknowledgement`."""

    name: ClassVar[str]
    plaintext: ClassVar[bool] = True  # a token is as good as a password to whoever sees it
    completes_from: ClassVar[frozenset[str] | None] = None
    needs_oauth2: ClassVar[bool] = True
    acknowledgement: ClassVar[bytes]  # the client's answer to the error challenge

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
        self._asked = False
        self._refused: Failure | None = None  # what the acknowledged error challenge ends in

    @staticmethod
    def parse(response: bytes) -> BearerRequest | None:
        raise NotImplementedError

    def error(self, status: str) -> bytes:
        raise NotImplementedError

    async def step(self, response: bytes | None) -> Step:
        if self._refused is not None:
            refused = self._refused
            if response != self.acknowledgement:
                return Failure(AuthFailure.MALFORMED, refused.user, "error not acknowledged")
            return refused
        if response is None and not self._asked:
            self._asked = True
            return Challenge(b"")  # no initial response: ask for it
        request = self.parse(response or b"")
        if request is None:
            return Failure(AuthFailure.MALFORMED, why=f"not an {self.name} message")
        tokens = self._authenticator.tokens
        assert tokens is not None, "offered only with [oauth2]"
        try:
            verified = await tokens.verify(request.token)
        except TokenUnavailable as exc:
            return Failure(AuthFailure.TEMPORARY, request.user, str(exc))
        except TokenRejected as exc:
            return self._refuse(request.user, exc.status, str(exc))
        if request.user and request.user != verified.user:
            return self._refuse(request.user, "invalid_token", "the token is another user's")
        authenticator = self._authenticator
        principal = await authenticator.blocking(authenticator.principal_for, verified.user)
        if principal is None:
            return self._refuse(verified.user, "invalid_token", "the token's user is unknown")
        return Success(principal)

    def _refuse(self, user: str | None, status: str, why: str) -> Challenge:
        self._refused = Failure(AuthFailure.CREDENTIALS, user, why)
        return Challenge(self.error(status))
