"""A small OAuth 2.0 identity provider for the tests, laid out as Keycloak lays out a realm.

It serves over HTTPS (a trustme certificate) on 127.0.0.1:

- `/realms/mail/protocol/openid-connect/certs`: the realm's JWKS (the keys can be rotated);
- `/realms/mail/protocol/openid-connect/token/introspect`: RFC 7662, for the client
  `pop3d` with the secret `CLIENT_SECRET` (HTTP Basic), answering what `introspection`
  holds for a token (inactive for any other);
- `/hang` never answers in time, `/garbage` answers what is no JSON;

and mints access tokens, signed with keys it makes (RSA, EC P-256 and P-384, Ed25519), with
Keycloak's claims. Requests are counted by path.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

REALM = "/realms/mail"
CERTS = REALM + "/protocol/openid-connect/certs"
INTROSPECT = REALM + "/protocol/openid-connect/token/introspect"
CLIENT_ID = "pop3d"
CLIENT_SECRET = "s3cret-of-pop3d"
AUDIENCE = "pop3d"

# The key kinds and the algorithm each signs with.
KEY_ALGORITHMS = {"rsa": "RS256", "ec256": "ES256", "ec384": "ES384", "ed25519": "EdDSA"}


def new_key(kind: str) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    assert kind == "ed25519", kind
    return ed25519.Ed25519PrivateKey.generate()


@dataclass
class SigningKey:
    kid: str
    private: Any
    algorithm: str

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        data = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": self.algorithm}


@dataclass
class IdentityProvider:
    url: str  # https://127.0.0.1:PORT
    keys: dict[str, SigningKey] = field(default_factory=dict)  # by kid: in the JWKS
    introspection: dict[str, dict[str, Any]] = field(default_factory=dict)  # token: answer
    requests: Counter[str] = field(default_factory=Counter)
    introspection_status: int = 200

    @property
    def issuer(self) -> str:
        return self.url + REALM

    @property
    def jwks_url(self) -> str:
        return self.url + CERTS

    @property
    def introspection_url(self) -> str:
        return self.url + INTROSPECT

    def add_key(self, kind: str = "rsa", kid: str | None = None) -> SigningKey:
        key = SigningKey(kid or f"{kind}-{len(self.keys) + 1}", new_key(kind), KEY_ALGORITHMS[kind])
        self.keys[key.kid] = key
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in self.keys.values()]}

    def claims(self, user: str, **changes: Any) -> dict[str, Any]:
        """An access token's claims as Keycloak writes them, for `user`."""
        now = int(time.time())
        claims = {
            "exp": now + 300,
            "iat": now,
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "f5f9a6b0-0000-4000-8000-" + user.encode().hex()[:12].ljust(12, "0"),
            "typ": "Bearer",
            "azp": "thunderbird",
            "scope": "openid email profile pop3",
            "email": user,
            "preferred_username": user.partition("@")[0],
        }
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, user: str, key: SigningKey | None = None, headers: dict[str, Any] | None = None,
        **changes: Any,
    ) -> str:  # fmt: skip
        key = key or next(iter(self.keys.values()))
        return jwt.encode(
            self.claims(user, **changes),
            key.private,
            algorithm=key.algorithm,
            headers={"kid": key.kid, **(headers or {})},
        )


def unsigned(claims: dict[str, Any], kid: str) -> str:
    """A token with `alg: none`, as an attacker writes it."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(claims)}."


class _Handler(BaseHTTPRequestHandler):
    idp: IdentityProvider

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.idp.requests[self.path] += 1
        if self.path == CERTS:
            self._answer(200, json.dumps(self.idp.jwks()).encode())
        elif self.path == "/hang":
            time.sleep(10)
            self._answer(200, b"{}")
        elif self.path == "/garbage":
            self._answer(200, b"<html>Service temporarily moved</html>", "text/html")
        else:
            self._answer(404, b"{}")

    def do_POST(self) -> None:
        self.idp.requests[self.path] += 1
        length = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        if self.path != INTROSPECT:
            self._answer(404, b"{}")
            return
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            self._answer(401, b'{"error":"invalid_client"}')
            return
        if self.idp.introspection_status != 200:
            self._answer(self.idp.introspection_status, b"{}")
            return
        token = form.get("token", [""])[0]
        answer = self.idp.introspection.get(token, {"active": False})
        self._answer(200, json.dumps(answer).encode())


@contextmanager
def identity_provider(directory: Path) -> Iterator[tuple[IdentityProvider, Path]]:
    """A running provider, and the CA file that trusts its certificate."""
    import trustme  # noqa: PLC0415 - a test dependency

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = directory / "idp-ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    issued.configure_cert(server_context)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.socket = server_context.wrap_socket(httpd.socket, server_side=True)
    idp = IdentityProvider(f"https://127.0.0.1:{httpd.server_address[1]}")
    handler = type("Handler", (_Handler,), {"idp": idp})
    httpd.RequestHandlerClass = handler
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp, ca_file
    finally:
        httpd.shutdown()
        httpd.server_close()
