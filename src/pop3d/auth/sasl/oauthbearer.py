"""OAUTHBEARER (RFC 7628): `n,a=user,` ^A `auth=Bearer <token>` ^A ... ^A ^A."""

from __future__ import annotations

from typing import ClassVar

from .base import decode_utf8
from .bearer import BearerExchange, BearerRequest

KVSEP = "\x01"


class OAuthBearer(BearerExchange):
    name: ClassVar[str] = "OAUTHBEARER"
    acknowledgement: ClassVar[bytes] = KVSEP.encode()

    @staticmethod
    def parse(response: bytes) -> BearerRequest | None:
        text = decode_utf8(response)
        if text is None:
            return None
        header, sep, rest = text.partition(KVSEP)
        # gs2-header: "n" or "y" (no channel binding: "p=" is refused), then the authzid.
        flag, comma, authzid = header.partition(",")
        if not sep or not comma or flag not in ("n", "y") or not authzid.endswith(","):
            return None
        authzid = authzid[:-1]
        if authzid and not authzid.startswith("a="):
            return None
        user = authzid[2:].replace("=2C", ",").replace("=3D", "=") or None
        # Each key=value ends in a kvsep, and one more ends the message: at least auth=.
        if not rest.endswith(KVSEP * 2):
            return None
        pairs = dict(kv.partition("=")[::2] for kv in rest[:-2].split(KVSEP))
        scheme, _, token = pairs.get("auth", "").partition(" ")
        token = token.strip(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        return BearerRequest(user, token)

    def error(self, status: str) -> bytes:
        tokens = self._authenticator.tokens
        assert tokens is not None, "offered only with [oauth2]"
        return tokens.error(status)
