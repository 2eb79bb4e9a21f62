"""XOAUTH2 (Google's, before OAUTHBEARER): `user=<user>` ^A `auth=Bearer <token>` ^A ^A.

Thunderbird, Outlook and K-9 send it to the large providers. A refused token is answered
with a JSON error as a last challenge, acknowledged by an empty response.
"""

from __future__ import annotations

import json
from typing import ClassVar

from .base import decode_utf8
from .bearer import BearerExchange, BearerRequest


class XOAuth2(BearerExchange):
    name: ClassVar[str] = "XOAUTH2"
    acknowledgement: ClassVar[bytes] = b""

    @staticmethod
    def parse(response: bytes) -> BearerRequest | None:
        text = decode_utf8(response)
        if text is None or not text.endswith("\x01\x01"):
            return None
        pairs = dict(kv.partition("=")[::2] for kv in text[:-2].split("\x01"))
        scheme, _, token = pairs.get("auth", "").partition(" ")
        token = token.strip(" ")
        user = pairs.get("user")
        if not user or scheme.lower() != "bearer" or not token:
            return None
        return BearerRequest(user, token)

    def error(self, status: str) -> bytes:
        tokens = self._authenticator.tokens
        assert tokens is not None, "offered only with [oauth2]"
        body = {"status": "400" if status == "invalid_request" else "401", "schemes": "bearer"}
        if tokens.config.required_scope:
            body["scope"] = tokens.config.required_scope
        return json.dumps(body, separators=(",", ":")).encode()
