"""OAuth 2.0 bearer tokens: which user an access token names, if it is good.

A token is good when the identity provider vouches for it: either it is a JWT whose signature
verifies with one of the provider's keys (a JWKS, from a file or an https URL) and whose `iss`,
`aud`, `exp`, `nbf` and scope are right, or the provider's RFC 7662 introspection endpoint says
it is active (and the same claims, where it gives them, are right). Signatures are checked by
PyJWT; only asymmetric algorithms are accepted, never `none` or a shared secret (HS*).

The provider is reached with httpx, on the event loop (a slow provider holds no thread), each
exchange bounded by `timeout` in all. The keys are kept, and fetched again when a token names
a key id we do not have, at most once a minute (a rotation is picked up; a stream of made-up
key ids is not a stream of fetches). A provider that cannot be reached, or answers garbage, is
our problem, not the client's: `TokenUnavailable`, -ERR [SYS/TEMP]. A token we refuse is
`TokenRejected`, with the reason for the log and the RFC 6750 error code for the client.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt

if TYPE_CHECKING:
    from ..config import OAuth2Config

log = logging.getLogger("pop3d.oauth2")

ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"})
REFETCH_AFTER = 60.0  # seconds between fetches of the keys for an unknown key id
RETRY_AFTER = 10.0  # ... and after a fetch that failed
MAX_RESPONSE = 1 << 20  # octets of a provider's answer we read at most


class TokenRejected(Exception):
    """The token is not good; the text is for the log (it never holds the token)."""

    def __init__(self, why: str, status: str = "invalid_token") -> None:
        super().__init__(why)
        self.status = status  # RFC 6750: invalid_token, insufficient_scope


class TokenUnavailable(Exception):
    """The provider cannot tell now; the text is for the log."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    user: str  # the username claim


def _claims_hold(config: OAuth2Config, claims: Mapping[str, Any]) -> str:
    """The user the claims name, once the scope holds; raises TokenRejected."""
    if config.required_scope is not None:
        granted = claims.get("scope", claims.get("scp", ""))
        scopes = granted.split() if isinstance(granted, str) else granted
        if not isinstance(scopes, list) or config.required_scope not in scopes:
            raise TokenRejected(f"scope {config.required_scope} missing", "insufficient_scope")
    user = claims.get(config.username_claim)
    if not isinstance(user, str) or not user:
        raise TokenRejected(f"no {config.username_claim} claim")
    return user


class TokenVerifier:
    def __init__(self, config: OAuth2Config) -> None:
        self.config = config
        context = ssl.create_default_context(cafile=config.ca_file)
        self._http = httpx.AsyncClient(verify=context, timeout=config.timeout)
        self._secret: str | None = None
        if config.client_secret_file is not None:
            try:
                self._secret = config.client_secret_file.read_text().strip()
            except OSError as exc:
                raise OSError(
                    f"[oauth2] client_secret_file {config.client_secret_file}: {exc.strerror}"
                ) from None
        self._keys: dict[str | None, dict[str, Any]] = {}  # by key id
        self._fetched_at = float("-inf")  # when the keys were last asked for
        self._fetch_failed = False
        self._fetching = asyncio.Lock()

    def error(self, status: str) -> bytes:
        """The JSON a failed OAUTHBEARER exchange sends (RFC 7628 section 3.2.2)."""
        issuer = (self.config.issuer or "").rstrip("/")
        body: dict[str, str] = {"status": status}
        if self.config.required_scope:
            body["scope"] = self.config.required_scope
        body["openid-configuration"] = f"{issuer}/.well-known/openid-configuration"
        return json.dumps(body, separators=(",", ":")).encode()

    async def verify(self, token: str) -> VerifiedToken:
        """Raises TokenRejected or TokenUnavailable."""
        if self.config.introspection_url is not None:
            return await self._introspect(token)
        return await self._verify_jwt(token)

    async def check(self) -> str:
        """What the provider gives us now, for `check-config`; raises TokenUnavailable."""
        if self.config.introspection_url is not None:
            return f"tokens introspected at {self.config.introspection_url}"
        await self._fetch_keys()
        if self._fetch_failed:
            raise TokenUnavailable(f"cannot get the keys from {self.config.jwks}")
        return f"{len(self._keys)} signing keys from {self.config.jwks}"

    async def close(self, after: float = 0) -> None:
        """Close the connections to the provider, once exchanges in flight had `after`
        seconds to end."""
        await asyncio.sleep(after)
        await self._http.aclose()

    # ---- JWTs and the provider's keys ----------------------------------------------------

    async def _verify_jwt(self, token: str) -> VerifiedToken:
        config = self.config
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("not a JWT") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise TokenRejected(f"algorithm {str(algorithm)[:20]!r} not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("bad key id")
        data = await self._key(kid)
        if data.get("alg", algorithm) != algorithm:
            raise TokenRejected(f"key {kid} is not for {algorithm}")
        try:
            key = jwt.PyJWK(data, algorithm)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.clock_skew,
                options={"require": ["exp", "iss"], "verify_aud": config.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("not valid yet (nbf)") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("wrong audience") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"no {exc.claim} claim") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise TokenRejected(f"unusable: {type(exc).__name__}") from None
        return VerifiedToken(_claims_hold(config, claims))

    async def _key(self, kid: str | None) -> dict[str, Any]:
        if kid not in self._keys:
            async with self._fetching:
                since = time.monotonic() - self._fetched_at
                if kid not in self._keys and since >= (
                    RETRY_AFTER if self._fetch_failed else REFETCH_AFTER
                ):
                    await self._fetch_keys()
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:  # a token without a key id, one key
            return next(iter(self._keys.values()))
        if self._fetch_failed:
            raise TokenUnavailable("the provider's keys cannot be had now")
        raise TokenRejected(f"unknown key id {str(kid)[:40]!r}")

    async def _fetch_keys(self) -> None:
        self._fetched_at = time.monotonic()
        source = self.config.jwks
        assert source is not None, "checked at load"
        try:
            if "://" in source:
                raw = await self._request("GET", source)
            else:
                raw = await asyncio.to_thread(Path(source).read_bytes)
            keys = _parse_jwks(raw)
        except (OSError, TokenUnavailable, ValueError) as exc:
            self._fetch_failed = True
            log.error("cannot get the keys from %s: %s", source, exc)
            return
        self._fetch_failed = False
        self._keys = keys
        log.info("%d keys from %s", len(keys), source)

    # ---- introspection (RFC 7662) ---------------------------------------------------------

    async def _introspect(self, token: str) -> VerifiedToken:
        config = self.config
        assert config.introspection_url is not None, "checked by the caller"
        credentials = f"{config.client_id}:{self._secret}".encode()
        raw = await self._request(
            "POST",
            config.introspection_url,
            data={"token": token, "token_type_hint": "access_token"},
            headers={"Authorization": "Basic " + base64.b64encode(credentials).decode()},
        )
        try:
            claims = json.loads(raw)
        except ValueError:
            raise TokenUnavailable("introspection answered with something not JSON") from None
        if not isinstance(claims, dict):
            raise TokenUnavailable("introspection answered with something not a JSON object")
        if claims.get("active") is not True:
            raise TokenRejected("not active")
        now = time.time()
        skew = config.clock_skew
        if _number(claims, "exp", float("inf")) + skew < now:
            raise TokenRejected("expired")
        if _number(claims, "nbf", float("-inf")) - skew > now:
            raise TokenRejected("not valid yet (nbf)")
        if "iss" in claims and claims["iss"] != config.issuer:
            raise TokenRejected("wrong issuer")
        if config.audience is not None:
            audience = claims.get("aud", [])
            if config.audience not in ([audience] if isinstance(audience, str) else audience):
                raise TokenRejected("wrong audience")
        return VerifiedToken(_claims_hold(config, claims))

    # ---- HTTP -----------------------------------------------------------------------------

    async def _request(self, method: str, url: str, **options: Any) -> bytes:
        """The body of a 200 answer, read within `timeout` in all and up to MAX_RESPONSE
        octets; raises TokenUnavailable."""
        try:
            async with asyncio.timeout(self.config.timeout):
                async with self._http.stream(method, url, **options) as response:
                    if response.status_code != 200:
                        raise TokenUnavailable(f"{url} answered HTTP {response.status_code}")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_RESPONSE:
                            raise TokenUnavailable(f"{url} answered more than {MAX_RESPONSE}")
                    return bytes(body)
        except TimeoutError:
            raise TokenUnavailable(f"{url} did not answer in {self.config.timeout}s") from None
        except httpx.HTTPError as exc:
            raise TokenUnavailable(f"{url}: {exc or type(exc).__name__}") from None


def _number(claims: Mapping[str, Any], name: str, default: float) -> float:
    value = claims.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"bad {name} claim")
    return float(value)


def _parse_jwks(raw: bytes) -> dict[str | None, dict[str, Any]]:
    """The signing keys of a JWKS document, by key id; raises ValueError for one that holds
    none we could use. A key without a key id is found by tokens without one."""
    document = json.loads(raw)
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWKS: no list of keys")
    keys: dict[str | None, dict[str, Any]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        if entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue  # a shared secret ("oct") never verifies a token here
        try:
            jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        kid = entry.get("kid")
        keys[kid if isinstance(kid, str) else None] = entry
    if not keys:
        raise ValueError("no signing key we can use")
    return keys
