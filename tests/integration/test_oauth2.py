"""OAUTHBEARER (RFC 7628) and XOAUTH2 over a real socket, against a local identity provider
(tests/peers/idp.py) serving keys the tests make and an RFC 7662 introspection endpoint."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import subprocess
import sys
import textwrap
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from pop3d.testing import ServerThread
from tests.integration.conftest import ROOT, LineClient, make_tls_files
from tests.peers import idp as idp_module
from tests.peers.idp import (
    AUDIENCE,
    CLIENT_ID,
    CLIENT_SECRET,
    IdentityProvider,
    identity_provider,
    unsigned,
)

ALICE = "alice@example.org"
USERS = {ALICE: "pw", "bob@example.org": "pw2"}
FAILED = b"-ERR [AUTH] Authentication failed.\r\n"
UNAVAILABLE = b"-ERR [SYS/TEMP] Authentication is unavailable now.\r\n"


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def oauthbearer(token: str, user: str | None = ALICE) -> str:
    authzid = f"a={user}" if user else ""
    return b64(f"n,{authzid},\x01host=127.0.0.1\x01port=110\x01auth=Bearer {token}\x01\x01")


def xoauth2(token: str, user: str = ALICE) -> str:
    return b64(f"user={user}\x01auth=Bearer {token}\x01\x01")


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[tuple[IdentityProvider, Path]]:
    with identity_provider(tmp_path / "idp") as (provider, ca_file):
        provider.add_key("rsa")
        provider.add_key("ec256")
        yield provider, ca_file


def oauth2_section(provider: IdentityProvider, ca_file: Path, **changes: Any) -> dict[str, Any]:
    section = {
        "issuer": provider.issuer,
        "audience": AUDIENCE,
        "jwks": provider.jwks_url,
        "required_scope": "pop3",
        "ca_file": str(ca_file),
        "timeout": 2,
    }
    section.update(changes)
    return {k: v for k, v in section.items() if v is not None}


def start(tmp_path: Path, oauth2: dict[str, Any], **sections: Any) -> ServerThread:
    config = {"oauth2": oauth2, **sections}
    return ServerThread.in_directory(tmp_path / "srv", users=USERS, config=config).start()


@pytest.fixture
def server(tmp_path: Path, idp: tuple[IdentityProvider, Path]) -> Iterator[ServerThread]:
    server = start(tmp_path, oauth2_section(*idp))
    yield server
    server.stop()


def connect(server: ServerThread) -> LineClient:
    client = LineClient(server.port)
    assert client.read_line().startswith(b"+OK")
    return client


def refused(client: LineClient, reply: bytes, acknowledgement: str = "AQ==") -> dict[str, Any]:
    """The error challenge of a refused token (its JSON), acknowledged: the -ERR follows."""
    assert reply.startswith(b"+ "), reply
    error = json.loads(base64.b64decode(reply[2:].strip()))
    assert client.command(acknowledgement) == FAILED
    return error


def test_capa_offers_both_when_oauth2_is_configured(server: ServerThread) -> None:
    client = connect(server)
    client.send(b"CAPA\r\n")
    assert b"SASL PLAIN LOGIN SCRAM-SHA-256 OAUTHBEARER XOAUTH2\r\n" in client.read_multiline()


def test_not_offered_without_oauth2(tmp_path: Path) -> None:
    with ServerThread.in_directory(tmp_path, users=USERS) as server:
        client = connect(server)
        client.send(b"CAPA\r\n")
        assert b"SASL PLAIN LOGIN SCRAM-SHA-256\r\n" in client.read_multiline()
        assert client.command("AUTH OAUTHBEARER " + oauthbearer("x")) == (
            b"-ERR Unsupported authentication mechanism OAUTHBEARER.\r\n"
        )


def test_offered_like_plain_only_on_a_secure_link(
    tmp_path: Path, idp: tuple[IdentityProvider, Path]
) -> None:
    tls = make_tls_files(tmp_path / "tls")
    server = start(
        tmp_path,
        oauth2_section(*idp),
        auth={"cleartext_networks": []},
        tls={"cert": str(tls.cert), "key": str(tls.key)},
    )
    try:
        client = connect(server)
        client.send(b"CAPA\r\n")
        capabilities = client.read_multiline()
        assert b"SASL SCRAM-SHA-256\r\n" in capabilities
        token = idp[0].token(ALICE)
        assert client.command("AUTH OAUTHBEARER " + oauthbearer(token)).startswith(
            b"-ERR [AUTH] Plaintext authentication is not allowed"
        )
        assert client.command("STLS") == b"+OK Begin TLS negotiation.\r\n"
        client.start_tls(tls.client_context())
        client.send(b"CAPA\r\n")
        assert b"SASL PLAIN LOGIN SCRAM-SHA-256 OAUTHBEARER XOAUTH2\r\n" in client.read_multiline()
        reply = client.command("AUTH OAUTHBEARER " + oauthbearer(token))
        assert reply == b"+OK Logged in, 0 messages (0 octets).\r\n"
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["rsa", "ec256", "ec384", "ed25519"])
def test_a_good_token_logs_in(
    server: ServerThread, idp: tuple[IdentityProvider, Path], kind: str
) -> None:
    provider, _ = idp
    key = provider.add_key(kind)
    server.deliver(ALICE, b"Subject: hi\r\n\r\nhello\r\n")
    client = connect(server)
    reply = client.command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE, key)))
    assert reply == b"+OK Logged in, 1 message (22 octets).\r\n"
    client.send(b"RETR 1\r\n")
    assert client.read_multiline() == b"+OK 22 octets\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"


def test_ps256_and_an_authzid_free_message(
    server: ServerThread, idp: tuple[IdentityProvider, Path]
) -> None:
    provider, _ = idp
    key = provider.add_key("rsa")
    key.algorithm = "PS256"
    client = connect(server)
    assert client.command("AUTH OAUTHBEARER") == b"+ \r\n"
    assert client.command(oauthbearer(provider.token(ALICE, key), user=None)).startswith(
        b"+OK Logged in"
    )


def test_xoauth2_logs_in_and_its_failure_is_acknowledged_empty(
    server: ServerThread, idp: tuple[IdentityProvider, Path]
) -> None:
    provider, _ = idp
    client = connect(server)
    assert client.command("AUTH XOAUTH2 " + xoauth2(provider.token(ALICE))).startswith(
        b"+OK Logged in"
    )
    client = connect(server)
    reply = client.command("AUTH XOAUTH2 " + xoauth2(provider.token(ALICE, exp=1000)))
    assert refused(client, reply, acknowledgement="") == {
        "status": "401",
        "schemes": "bearer",
        "scope": "pop3",
    }
    client = connect(server)
    other = provider.token("bob@example.org")
    assert refused(client, client.command("AUTH XOAUTH2 " + xoauth2(other)), "")["status"] == "401"


def hmac_token(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    def part(data: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    signed = part({"alg": "HS256", "typ": "JWT", "kid": kid}) + b"." + part(claims)
    mac = hmac.new(secret, signed, hashlib.sha256).digest()
    return (signed + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()


def bad_tokens(provider: IdentityProvider) -> dict[str, tuple[str, str]]:
    """Each case: (the token, the status the error names)."""
    rsa = provider.keys["rsa-1"]
    other = provider.add_key("rsa", kid="not-published")
    del provider.keys["not-published"]
    header, payload, _ = provider.token(ALICE, rsa).split(".")
    foreign_signature = provider.token(ALICE, other).split(".")[2]
    public_pem = rsa.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "expired": (provider.token(ALICE, exp=int(time.time()) - 3600), "invalid_token"),
        "wrong issuer": (
            provider.token(ALICE, iss="https://evil.example/realms/mail"),
            "invalid_token",
        ),
        "wrong audience": (provider.token(ALICE, aud="another-app"), "invalid_token"),
        "not yet valid": (provider.token(ALICE, nbf=int(time.time()) + 3600), "invalid_token"),
        "bad signature": (f"{header}.{payload}.{foreign_signature}", "invalid_token"),
        "alg none": (unsigned(provider.claims(ALICE), "rsa-1"), "invalid_token"),
        # The classic confusion: the published RSA key used as an HMAC secret.
        "HS256 with the public key": (
            hmac_token(provider.claims(ALICE), public_pem, "rsa-1"),
            "invalid_token",
        ),
        "unknown user": (provider.token("mallory@example.org"), "invalid_token"),
        "missing scope": (provider.token(ALICE, scope="openid email"), "insufficient_scope"),
        "no exp": (provider.token(ALICE, exp=None), "invalid_token"),
        "not a JWT": ("this-is-no-token", "invalid_token"),
        "JSON, not a JWT": (base64.b64encode(b'{"sub":"alice"}').decode(), "invalid_token"),
        "unknown key id": (provider.token(ALICE, headers={"kid": "made-up"}), "invalid_token"),
    }


def test_every_bad_token_is_refused_as_rfc_7628_says(
    server: ServerThread, idp: tuple[IdentityProvider, Path], caplog: pytest.LogCaptureFixture
) -> None:
    provider, _ = idp
    with caplog.at_level(logging.INFO, logger="pop3d.session"):
        for case, (token, status) in bad_tokens(provider).items():
            client = connect(server)
            error = refused(client, client.command("AUTH OAUTHBEARER " + oauthbearer(token)))
            assert error == {
                "status": status,
                "scope": "pop3",
                "openid-configuration": provider.issuer + "/.well-known/openid-configuration",
            }, case
            assert client.command("NOOP") == b"-ERR Log in first.\r\n"  # the session goes on
    failures = [r.getMessage() for r in caplog.records if "auth failed:" in r.getMessage()]
    assert len(failures) == len(bad_tokens(provider))
    assert all("mechanism=OAUTHBEARER reason=credentials" in f for f in failures)
    assert any("why=expired" in f for f in failures)
    assert any('why="wrong audience"' in f for f in failures)
    for token, _ in bad_tokens(provider).values():
        assert token not in caplog.text


def test_a_token_for_another_user_than_the_authzid(
    server: ServerThread, idp: tuple[IdentityProvider, Path]
) -> None:
    provider, _ = idp
    client = connect(server)
    token = provider.token("bob@example.org")
    assert refused(client, client.command("AUTH OAUTHBEARER " + oauthbearer(token, ALICE)))


def test_the_error_must_be_acknowledged_with_the_kvsep(
    server: ServerThread, idp: tuple[IdentityProvider, Path]
) -> None:
    provider, _ = idp
    client = connect(server)
    reply = client.command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE, exp=1)))
    assert reply.startswith(b"+ ")
    assert (
        client.command(b64("something else")) == b"-ERR Authentication exchange was malformed.\r\n"
    )
    client = connect(server)
    client.command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE, exp=1)))
    assert client.command("*") == b"-ERR Authentication cancelled.\r\n"


@pytest.mark.parametrize(
    "message",
    [
        b"garbage",
        b"p=tls-unique,a=alice@example.org,\x01auth=Bearer x\x01\x01",  # channel binding
        b"n,a=alice@example.org,\x01auth=Bearer x\x01",  # the final kvsep missing
        b"n,,\x01auth=Basic eDp5\x01\x01",
        b"n,,\x01\x01",
        b"n,b=x,\x01auth=Bearer x\x01\x01",
        b"\xff\xfe",
    ],
)
def test_malformed_messages(server: ServerThread, message: bytes) -> None:
    client = connect(server)
    reply = client.command("AUTH OAUTHBEARER " + b64(message))
    assert reply == b"-ERR Authentication exchange was malformed.\r\n"


def test_bad_input_gets_a_clear_err(server: ServerThread) -> None:
    client = connect(server)
    assert client.command("AUTH OAUTHBEARER") == b"+ \r\n"
    client.send(b64(b"n,,\x01auth=Bearer " + b"x" * 65536 + b"\x01\x01").encode() + b"\r\n")
    assert client.read_line() == b"-ERR Authentication line too long.\r\n"
    assert client.command("AUTH OAUTHBEARER") == b"+ \r\n"
    assert (
        client.command("not base64!") == b"-ERR Invalid base64 in the authentication response.\r\n"
    )
    assert (
        client.command("AUTH OAUTHBEARER %%%")
        == b"-ERR Invalid base64 in the initial response.\r\n"
    )
    assert client.command("CAPA").startswith(b"+OK")


def test_failures_count_in_the_failed_login_delay(
    tmp_path: Path, idp: tuple[IdentityProvider, Path]
) -> None:
    provider, _ = idp
    server = start(
        tmp_path, oauth2_section(*idp), auth={"failure_delay": 0.4, "max_auth_failures": 5}
    )
    try:
        client = connect(server)
        reply = client.command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE, exp=1)))
        started = time.monotonic()
        assert client.command("AQ==") == FAILED
        first = time.monotonic() - started
        client.command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE, exp=1)))
        started = time.monotonic()
        assert client.command("AQ==") == FAILED
        second = time.monotonic() - started
        assert reply.startswith(b"+ ")
        assert 0.35 < first < second
        started = time.monotonic()
        good = client.command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE)))
        assert good.startswith(b"+OK Logged in")
        assert time.monotonic() - started < 0.35  # never a lockout
    finally:
        server.stop()


def test_key_rotation_is_picked_up_without_a_restart(
    server: ServerThread, idp: tuple[IdentityProvider, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, _ = idp
    from pop3d.auth import oauth2  # noqa: PLC0415

    monkeypatch.setattr(oauth2, "REFETCH_AFTER", 1.0)
    assert (
        connect(server)
        .command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE)))
        .startswith(b"+OK")
    )
    assert provider.requests[idp_module.CERTS] == 1
    # Made-up key ids within the minute (here: the second) fetch nothing.
    for n in range(5):
        client = connect(server)
        token = provider.token(ALICE, headers={"kid": f"made-up-{n}"})
        refused(client, client.command("AUTH OAUTHBEARER " + oauthbearer(token)))
    assert provider.requests[idp_module.CERTS] == 1
    provider.keys.clear()
    new = provider.add_key("ec256", kid="rotated")
    time.sleep(1.1)
    reply = connect(server).command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE, new)))
    assert reply.startswith(b"+OK Logged in")
    assert provider.requests[idp_module.CERTS] == 2


def test_jwks_from_a_file(tmp_path: Path, idp: tuple[IdentityProvider, Path]) -> None:
    provider, ca_file = idp
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(provider.jwks()))
    server = start(tmp_path, oauth2_section(provider, ca_file, jwks=str(jwks)))
    try:
        client = connect(server)
        assert client.command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE))).startswith(
            b"+OK"
        )
    finally:
        server.stop()


@pytest.mark.parametrize("path", ["/hang", "/garbage", "/nothing-here"])
def test_a_jwks_url_that_hangs_or_answers_garbage(
    tmp_path: Path, idp: tuple[IdentityProvider, Path], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    provider, ca_file = idp
    server = start(tmp_path, oauth2_section(provider, ca_file, jwks=provider.url + path, timeout=1))
    try:
        with caplog.at_level(logging.INFO):
            client = connect(server)
            started = time.monotonic()
            reply = client.command("AUTH OAUTHBEARER " + oauthbearer(provider.token(ALICE)))
            assert reply == UNAVAILABLE
            assert time.monotonic() - started < 3
            assert client.command("NOOP") == b"-ERR Log in first.\r\n"
            # Within the retry wait, no new fetch: answered at once.
            started = time.monotonic()
            reply = connect(server).command("AUTH XOAUTH2 " + xoauth2(provider.token(ALICE)))
            assert reply == UNAVAILABLE
            assert time.monotonic() - started < 0.5
        assert "cannot get the keys from " + provider.url + path in caplog.text
        assert "auth unavailable: " in caplog.text
    finally:
        server.stop()


@pytest.fixture
def introspecting(tmp_path: Path, idp: tuple[IdentityProvider, Path]) -> Iterator[ServerThread]:
    provider, ca_file = idp
    secret = tmp_path / "client-secret"
    secret.write_text(CLIENT_SECRET + "\n")
    section = oauth2_section(
        provider, ca_file, jwks=None, introspection_url=provider.introspection_url,
        client_id=CLIENT_ID, client_secret_file=str(secret),
    )  # fmt: skip
    server = start(tmp_path, section)
    yield server
    server.stop()


def test_introspection(introspecting: ServerThread, idp: tuple[IdentityProvider, Path]) -> None:
    provider, _ = idp
    now = int(time.time())
    provider.introspection["good"] = {"active": True, **provider.claims(ALICE), "exp": now + 60}
    provider.introspection["gone"] = {"active": False}
    provider.introspection["expired"] = {"active": True, **provider.claims(ALICE), "exp": now - 600}
    provider.introspection["scopeless"] = {
        "active": True,
        **provider.claims(ALICE),
        "scope": "email",
    }
    client = connect(introspecting)
    assert client.command("AUTH OAUTHBEARER " + oauthbearer("good")).startswith(b"+OK Logged in")
    for token, status in [("gone", "invalid_token"), ("expired", "invalid_token"),
                          ("unknown", "invalid_token"), ("scopeless", "insufficient_scope")]:  # fmt: skip
        client = connect(introspecting)
        error = refused(client, client.command("AUTH OAUTHBEARER " + oauthbearer(token)))
        assert error["status"] == status, token
    assert provider.requests[idp_module.INTROSPECT] == 5


def test_introspection_endpoint_down_is_temporary(
    introspecting: ServerThread, idp: tuple[IdentityProvider, Path]
) -> None:
    provider, _ = idp
    provider.introspection["good"] = {"active": True, **provider.claims(ALICE)}
    provider.introspection_status = 503
    client = connect(introspecting)
    assert client.command("AUTH OAUTHBEARER " + oauthbearer("good")) == UNAVAILABLE
    assert client.command("AUTH XOAUTH2 " + xoauth2("good")) == UNAVAILABLE
    provider.introspection_status = 200
    assert client.command("AUTH OAUTHBEARER " + oauthbearer("good")).startswith(b"+OK Logged in")


def test_introspection_with_a_wrong_client_secret_is_temporary(
    tmp_path: Path, idp: tuple[IdentityProvider, Path], caplog: pytest.LogCaptureFixture
) -> None:
    provider, ca_file = idp
    secret = tmp_path / "wrong-secret"
    secret.write_text("not it")
    section = oauth2_section(
        provider, ca_file, jwks=None, introspection_url=provider.introspection_url,
        client_id=CLIENT_ID, client_secret_file=str(secret),
    )  # fmt: skip
    server = start(tmp_path, section)
    try:
        with caplog.at_level(logging.INFO):
            assert connect(server).command("AUTH OAUTHBEARER " + oauthbearer("x")) == UNAVAILABLE
        assert "answered HTTP 401" in caplog.text
        assert "not it" not in caplog.text
    finally:
        server.stop()


def test_the_readme_keycloak_example_against_the_local_realm(
    tmp_path: Path, idp: tuple[IdentityProvider, Path]
) -> None:
    """The README's [oauth2] example for Keycloak, pointed at the local provider (laid out as
    a Keycloak realm): its JWKS form, then its introspection form."""
    provider, ca_file = idp
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"\n( *)```toml\n( *\[oauth2\]\n.*?)\n *```", readme, re.DOTALL)
    assert match, "no [oauth2] example in the README"
    example = textwrap.dedent(match.group(2)).replace("https://keycloak.example.org", provider.url)
    section = tomllib.loads(example)["oauth2"]
    assert section["username_claim"] == "preferred_username"
    introspection = re.search(r'`introspection_url = "(https://keycloak[^"]+)"`', readme)
    assert introspection
    secret = tmp_path / "oauth2-secret"
    secret.write_text(CLIENT_SECRET)
    by_introspection = {
        **{k: v for k, v in section.items() if k != "jwks"},
        "introspection_url": introspection.group(1).replace(
            "https://keycloak.example.org", provider.url
        ),
        "client_id": CLIENT_ID,
        "client_secret_file": str(secret),
    }
    token = provider.token(ALICE)
    provider.introspection[token] = {"active": True, **provider.claims(ALICE)}
    for n, oauth2 in enumerate([section, by_introspection]):
        users = {"alice": "pw"}  # named by preferred_username, as the example says
        config = {"oauth2": {**oauth2, "ca_file": str(ca_file)}}
        with ServerThread.in_directory(tmp_path / f"s{n}", users=users, config=config) as server:
            client = connect(server)
            reply = client.command("AUTH OAUTHBEARER " + oauthbearer(token, user=None))
            assert reply.startswith(b"+OK Logged in"), oauth2
    assert provider.requests[idp_module.CERTS] == 1
    assert provider.requests[idp_module.INTROSPECT] == 1


def test_check_config_asks_the_provider(tmp_path: Path, idp: tuple[IdentityProvider, Path]) -> None:
    provider, ca_file = idp
    (tmp_path / "users.passwd").write_text("alice:{PLAIN}pw\n")

    def check(**oauth2: Any) -> subprocess.CompletedProcess[str]:
        lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in oauth2.items())
        config = tmp_path / "pop3d.toml"
        config.write_text(
            '[auth]\npasswd_file = "users.passwd"\n[maildir]\npath = "mail/{user}"\n'
            f"[oauth2]\nissuer = {json.dumps(provider.issuer)}\nca_file = {json.dumps(str(ca_file))}\n"
            + lines
        )
        return subprocess.run(
            [sys.executable, "-m", "pop3d", "check-config", "--config", str(config)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    good = check(jwks=provider.jwks_url, audience=AUDIENCE)
    assert good.returncode == 0, good.stderr
    assert f"[oauth2] 2 signing keys from {provider.jwks_url}\n" in good.stdout
    assert "SASL mechanisms offered: PLAIN LOGIN SCRAM-SHA-256 OAUTHBEARER XOAUTH2\n" in good.stdout
    no_audience = check(jwks=provider.jwks_url)
    assert "warning: [oauth2] has no audience" in no_audience.stdout
    bad = check(jwks=provider.url + "/garbage", timeout=1)
    assert bad.returncode == 78
    assert f"error: cannot get the keys from {provider.url}/garbage" in bad.stderr
    missing = check(introspection_url=provider.introspection_url, client_id=CLIENT_ID,
                    client_secret_file=str(tmp_path / "nothing"))  # fmt: skip
    assert missing.returncode == 78
    assert "[oauth2] client_secret_file" in missing.stderr
