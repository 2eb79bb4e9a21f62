"""SASL (RFC 5034) over a real socket: PLAIN, LOGIN, SCRAM-SHA-256 with scramp's client."""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

import pytest
import scramp

from pop3d.auth.schemes import ScramEntry, hash_password
from pop3d.testing import ServerThread
from tests.integration.conftest import ALICE_PASSWORD, LineClient


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(line: bytes) -> bytes:
    assert line.startswith(b"+ "), line
    return base64.b64decode(line[2:].strip())


@pytest.fixture
def scram_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    entry = ScramEntry.from_password("SCRAM-SHA-256", b"carol's password")
    stored = "{SCRAM-SHA-256}" + ",".join(
        [str(entry.iterations), b64(entry.salt), b64(entry.stored_key), b64(entry.server_key)]
    )
    users = {"alice": ALICE_PASSWORD, "carol": stored}
    with ServerThread.in_directory(tmp_path, users=users) as server:
        yield server


def connect(server: ServerThread) -> LineClient:
    client = LineClient(server.port)
    client.read_line()
    return client


def test_capa_and_bare_auth_list_the_mechanisms(server: ServerThread) -> None:
    client = connect(server)
    client.send(b"CAPA\r\n")
    assert b"SASL PLAIN LOGIN SCRAM-SHA-256\r\n" in client.read_multiline()
    client.send(b"AUTH\r\n")
    assert (
        client.read_multiline()
        == b"+OK Mechanisms follow\r\nPLAIN\r\nLOGIN\r\nSCRAM-SHA-256\r\n.\r\n"
    )


def test_plain_with_initial_response(server: ServerThread) -> None:
    client = connect(server)
    reply = client.command("AUTH PLAIN " + b64(f"\0alice\0{ALICE_PASSWORD}"))
    assert reply == b"+OK Logged in, 0 messages (0 octets).\r\n"


def test_plain_without_initial_response(server: ServerThread) -> None:
    client = connect(server)
    assert client.command("AUTH PLAIN") == b"+ \r\n"
    assert client.command(b64(f"alice\0alice\0{ALICE_PASSWORD}")).startswith(b"+OK Logged in")


@pytest.mark.parametrize(
    ("response", "reply"),
    [
        (b64("\0alice\0wrong"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (b64("\0nobody\0wrong"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (b64(f"bob\0alice\0{ALICE_PASSWORD}"), b"-ERR [AUTH] Authentication failed.\r\n"),
        (b64("no separators"), b"-ERR Authentication exchange was malformed.\r\n"),
        ("=", b"-ERR Authentication exchange was malformed.\r\n"),
        ("not*base64!", b"-ERR Invalid base64 in the initial response.\r\n"),
    ],
)
def test_plain_failures(server: ServerThread, response: str, reply: bytes) -> None:
    client = connect(server)
    assert client.command("AUTH PLAIN " + response) == reply
    assert client.command("CAPA").startswith(b"+OK")  # the session goes on
    client.read_multiline()


def test_login_mechanism(server: ServerThread) -> None:
    client = connect(server)
    assert unb64(client.command("AUTH LOGIN")) == b"Username:"
    assert unb64(client.command(b64("alice"))) == b"Password:"
    assert client.command(b64(ALICE_PASSWORD)).startswith(b"+OK Logged in")


def test_login_with_initial_response(server: ServerThread) -> None:
    client = connect(server)
    assert unb64(client.command("AUTH LOGIN " + b64("alice"))) == b"Password:"
    assert client.command(b64("wrong")) == b"-ERR [AUTH] Authentication failed.\r\n"


def test_cancel_and_bad_base64_in_a_continuation(server: ServerThread) -> None:
    client = connect(server)
    client.command("AUTH LOGIN")
    assert client.command("*") == b"-ERR Authentication cancelled.\r\n"
    client.command("AUTH LOGIN")
    assert client.command("%%%") == b"-ERR Invalid base64 in the authentication response.\r\n"
    client.command("USER alice")
    assert client.command(f"PASS {ALICE_PASSWORD}").startswith(b"+OK Logged in")


def test_unknown_mechanism(server: ServerThread) -> None:
    client = connect(server)
    assert (
        client.command("AUTH CRAM-MD5")
        == b"-ERR Unsupported authentication mechanism CRAM-MD5.\r\n"
    )


def test_sasl_lines_may_be_long_but_not_endless(server: ServerThread) -> None:
    client = connect(server)
    client.command("AUTH PLAIN")
    long_token = b64("\0alice\0" + "x" * 30_000)  # 40 KB, like an OAuth token
    assert client.command(long_token) == b"-ERR [AUTH] Authentication failed.\r\n"
    client.command("AUTH PLAIN")
    client.send(b"A" * 100_000 + b"\r\n")
    assert client.read_line() == b"-ERR Authentication line too long.\r\n"
    assert client.command("NOOP") == b"-ERR Log in first.\r\n"


def scram_login(
    server: ServerThread,
    user: str,
    password: str,
    *,
    initial: bool = True,
    client: LineClient | None = None,
) -> bytes:
    client = client or connect(server)
    scram = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    first = scram.get_client_first()
    if initial:
        server_first = unb64(client.command("AUTH SCRAM-SHA-256 " + b64(first)))
    else:
        assert client.command("AUTH SCRAM-SHA-256") == b"+ \r\n"
        server_first = unb64(client.command(b64(first)))
    scram.set_server_first(server_first.decode())
    reply = client.command(b64(scram.get_client_final()))
    if not reply.startswith(b"+ "):
        return reply
    scram.set_server_final(unb64(reply).decode())  # proves the server knew the keys
    return client.command("")


def test_scram_with_stored_keys(scram_server: ServerThread) -> None:
    assert scram_login(scram_server, "carol", "carol's password").startswith(b"+OK Logged in")


def test_scram_with_a_plain_password_and_no_initial_response(scram_server: ServerThread) -> None:
    reply = scram_login(scram_server, "alice", ALICE_PASSWORD, initial=False)
    assert reply.startswith(b"+OK Logged in")


@pytest.mark.parametrize(
    ("user", "password"), [("carol", "wrong"), ("alice", "wrong"), ("nobody", "x")]
)
def test_scram_failures_look_alike(scram_server: ServerThread, user: str, password: str) -> None:
    assert scram_login(scram_server, user, password) == b"-ERR [AUTH] Authentication failed.\r\n"


def test_scram_for_a_user_added_without_keys_fails_alike(scram_server: ServerThread) -> None:
    """A session that began while SCRAM was offered keeps it; a user added meanwhile whose
    hash SCRAM cannot use fails as an unknown user does, and new sessions are not offered
    SCRAM any more."""
    client = connect(scram_server)
    passwd = scram_server.config.passwd_file
    passwd.write_text(passwd.read_text() + "dave:{SHA512-CRYPT}$6$x$y::::::\n")
    reply = scram_login(scram_server, "dave", "x", client=client)
    assert reply == b"-ERR [AUTH] Authentication failed.\r\n"
    deadline = time.monotonic() + 5
    while True:  # the server looks at the passwd-file once a second
        fresh = connect(scram_server)
        fresh.send(b"CAPA\r\n")
        capabilities = fresh.read_multiline()
        if b"SCRAM" not in capabilities or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert b"SASL PLAIN LOGIN\r\n" in capabilities
    assert fresh.command("AUTH SCRAM-SHA-256") == (
        b"-ERR Unsupported authentication mechanism SCRAM-SHA-256.\r\n"
    )


def test_scram_garbage(scram_server: ServerThread) -> None:
    client = connect(scram_server)
    reply = client.command("AUTH SCRAM-SHA-256 " + b64("this is not scram"))
    assert reply == b"-ERR Authentication exchange was malformed.\r\n"


def test_the_offer_is_logged_once_and_again_when_the_users_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    users = {"alice": "{PLAIN}x", "bob": hash_password("ARGON2ID", b"y")}

    def offers() -> list[str]:
        return [r.getMessage() for r in caplog.records if "SASL mechanisms" in r.getMessage()]

    with (
        caplog.at_level(logging.INFO, logger="pop3d.server"),
        ServerThread.in_directory(tmp_path, users=users) as server,
    ):
        time.sleep(2.5)  # the server looks at the passwd-file twice more meanwhile
        assert offers() == [
            "SASL mechanisms offered: PLAIN LOGIN; SCRAM-SHA-256 left out: 1 user has a "
            "password it cannot use ({ARGON2ID} 1)"
        ]
        server.config.passwd_file.write_text("alice:{PLAIN}x\nbob:{PLAIN}y\n")
        deadline = time.monotonic() + 5
        while len(offers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert offers()[1:] == ["SASL mechanisms offered: PLAIN LOGIN SCRAM-SHA-256"]
