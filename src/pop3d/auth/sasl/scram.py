"""SCRAM-SHA-256 (RFC 5802, RFC 7677), server side, with `scramp`.

Users whose passwd-file entry is `{SCRAM-SHA-256}` (as `doveadm pw -s SCRAM-SHA-256` writes
it) or `{PLAIN}` can use it, and it is offered only while every user's is (see `offer`). For
anyone else, known or not, the exchange runs on with keys that no password matches, so SCRAM
does not tell an attacker which users exist. The server's final
message goes out as one more challenge, and the client's empty answer completes the login
(RFC 4422 section 5, for protocols without additional data on success). Channel binding
(SCRAM-SHA-256-PLUS) is not offered.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import ClassVar

import scramp

from ...protocol.events import AuthFailure
from ..authenticator import Authenticator
from ..schemes import PLAINTEXT_SCHEMES
from .base import Challenge, Failure, Step, Success, decode_utf8

_MECHANISM = scramp.ScramMechanism("SCRAM-SHA-256")
# Keyed per process, so the stand-in salt of an unknown user is stable within a run but
# cannot be computed from outside.
_DECOY_KEY = os.urandom(32)


class ScramSha256:
    name: ClassVar[str] = "SCRAM-SHA-256"
    plaintext: ClassVar[bool] = False
    completes_from: ClassVar[frozenset[str] | None] = PLAINTEXT_SCHEMES | {"SCRAM-SHA-256"}
    needs_oauth2: ClassVar[bool] = False

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator
        self._server = _MECHANISM.make_server(self._keys)
        self._user: str | None = None
        self._stage = 0

    def _keys(self, user: str) -> tuple[bytes, bytes, bytes, int]:
        name = user.replace("=2C", ",").replace("=3D", "=")
        self._user = name
        entry = self._authenticator.scram_entry(name, "SCRAM-SHA-256")
        if entry is None:
            salt = hmac.new(_DECOY_KEY, name.encode(), hashlib.sha256).digest()[:16]
            return salt, os.urandom(32), os.urandom(32), 4096
        return entry.salt, entry.stored_key, entry.server_key, entry.iterations

    async def step(self, response: bytes | None) -> Step:
        self._stage += 1
        if self._stage == 1:
            # scramp asks for the user's keys (`_keys`) from inside: a lookup, perhaps PBKDF2.
            return await self._authenticator.blocking(self._client_first, response)
        if self._stage == 2:
            return self._client_final(response or b"")
        if self._stage == 3 and response == b"":
            name = self._user or ""
            principal = await self._authenticator.blocking(self._authenticator.principal_for, name)
            if principal is not None:
                return Success(principal)
            return Failure(AuthFailure.CREDENTIALS, self._user)
        return Failure(AuthFailure.MALFORMED, self._user)

    def _client_first(self, response: bytes | None) -> Step:
        if response is None:
            self._stage = 0  # the next response is the client-first message
            return Challenge(b"")
        text = decode_utf8(response)
        if text is None:
            return Failure(AuthFailure.MALFORMED)
        try:
            self._server.set_client_first(text)
        except scramp.ScramException:
            return Failure(AuthFailure.MALFORMED, self._user)
        authzid = text.split(",", 2)[1] if text.count(",") >= 2 else ""
        if authzid not in ("", "a=" + (self._user or "")):
            return Failure(AuthFailure.CREDENTIALS, self._user)
        return Challenge(self._server.get_server_first().encode())

    def _client_final(self, response: bytes) -> Step:
        text = decode_utf8(response)
        if text is None:
            return Failure(AuthFailure.MALFORMED, self._user)
        try:
            self._server.set_client_final(text)
        except scramp.ScramException:
            return Failure(AuthFailure.CREDENTIALS, self._user)
        return Challenge(self._server.get_server_final().encode())
