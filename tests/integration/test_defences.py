"""What a public server needs: no cleartext passwords, login throttling, connection caps."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pop3d.testing import ServerThread
from tests.integration.conftest import ALICE_PASSWORD, LineClient, TlsFiles


def make_server(tmp_path: Path, **sections: dict[str, Any]) -> ServerThread:
    return ServerThread.in_directory(tmp_path, users={"alice": ALICE_PASSWORD}, config=sections)


@pytest.fixture
def strict_server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[ServerThread]:
    """Loopback treated as the open internet: no cleartext auth at all."""
    with make_server(
        tmp_path / "srv",
        auth={"cleartext_networks": []},
        tls={"cert": str(tls_files.cert), "key": str(tls_files.key)},
    ) as server:
        yield server


def test_cleartext_auth_is_refused_until_stls(
    strict_server: ServerThread, tls_files: TlsFiles
) -> None:
    client = LineClient(strict_server.port)
    client.read_line()
    client.send(b"CAPA\r\n")
    caps = client.read_multiline().split(b"\r\n")
    assert b"USER" not in caps
    assert b"SASL SCRAM-SHA-256" in caps
    assert b"STLS" in caps
    refusal = (
        b"-ERR [AUTH] Plaintext authentication is not allowed on an unencrypted connection; "
        b"use STLS first.\r\n"
    )
    assert client.command("USER alice") == refusal
    assert client.command(f"PASS {ALICE_PASSWORD}") == refusal
    assert client.command("AUTH PLAIN " + base64.b64encode(b"\0alice\0x").decode()) == refusal
    client.send(b"AUTH\r\n")
    assert client.read_multiline() == b"+OK Mechanisms follow\r\nSCRAM-SHA-256\r\n.\r\n"
    client.command("STLS")
    client.start_tls(tls_files.client_context())
    client.send(b"CAPA\r\n")
    caps = client.read_multiline().split(b"\r\n")
    assert b"USER" in caps
    assert b"SASL PLAIN LOGIN SCRAM-SHA-256" in caps
    client.command("USER alice")
    assert client.command(f"PASS {ALICE_PASSWORD}").startswith(b"+OK Logged in")


def fail_once(port: int) -> float:
    client = LineClient(port)
    client.read_line()
    client.command("USER alice")
    started = time.monotonic()
    assert client.command("PASS wrong") == b"-ERR [AUTH] Authentication failed.\r\n"
    elapsed = time.monotonic() - started
    client.close()
    return elapsed


def test_failed_logins_are_delayed_more_and_more_up_to_a_cap(tmp_path: Path) -> None:
    auth = {"failure_delay": 0.3, "max_failure_delay": 1.0}
    with make_server(tmp_path, auth=auth) as server:
        delays = [fail_once(server.port) for _ in range(4)]
        assert 0.3 <= delays[0] < 0.55
        assert 0.6 <= delays[1] < 0.85
        assert 1.0 <= delays[2] < 1.3
        assert 1.0 <= delays[3] < 1.3  # capped
        # The penalty never locks the owner out: the right password is answered at once.
        client = LineClient(server.port)
        client.read_line()
        client.command("USER alice")
        started = time.monotonic()
        assert client.command(f"PASS {ALICE_PASSWORD}").startswith(b"+OK Logged in")
        assert time.monotonic() - started < 0.3


def test_the_penalty_decays_after_a_quiet_period(tmp_path: Path) -> None:
    auth = {"failure_delay": 0.2, "max_failure_delay": 5.0, "penalty_reset": 1.0}
    with make_server(tmp_path, auth=auth) as server:
        fail_once(server.port)
        assert fail_once(server.port) >= 0.4
        time.sleep(1.1)
        assert fail_once(server.port) < 0.35


def test_trusted_networks_are_exempt(tmp_path: Path) -> None:
    auth = {"failure_delay": 1.0, "trusted_networks": ["127.0.0.0/8"]}
    with make_server(tmp_path, auth=auth) as server:
        assert fail_once(server.port) < 0.5


def test_a_delayed_failure_does_not_stall_other_sessions(tmp_path: Path) -> None:
    with make_server(tmp_path, auth={"failure_delay": 1.5}) as server:
        other = LineClient(server.port)
        other.read_line()
        waiting = threading.Thread(target=fail_once, args=(server.port,))
        waiting.start()
        time.sleep(0.2)
        started = time.monotonic()
        for _ in range(20):
            assert other.command("CAPA").startswith(b"+OK")
            other.read_multiline()
        assert time.monotonic() - started < 0.5
        waiting.join()


def test_three_failures_close_the_session(server: ServerThread) -> None:
    client = LineClient(server.port)
    client.read_line()
    for _ in range(2):
        client.command("USER alice")
        assert client.command("PASS wrong") == b"-ERR [AUTH] Authentication failed.\r\n"
    client.command("USER alice")
    client.send(b"PASS wrong\r\n")
    assert client.read_until_closed() == (
        b"-ERR [AUTH] Authentication failed.\r\n-ERR Too many failed authentications.\r\n"
    )


def test_connections_per_address_are_capped(tmp_path: Path) -> None:
    with make_server(tmp_path, limits={"max_connections_per_ip": 2}) as server:
        kept = [LineClient(server.port) for _ in range(2)]
        for client in kept:
            assert client.read_line().startswith(b"+OK")
        refused = LineClient(server.port)
        assert refused.read_until_closed() == (
            b"-ERR [SYS/TEMP] Too many connections from your address.\r\n"
        )
        kept[0].command("QUIT")
        kept[0].read_until_closed()
        time.sleep(0.1)
        assert LineClient(server.port).read_line().startswith(b"+OK")


def test_connections_are_capped_for_the_whole_server(tmp_path: Path) -> None:
    limits = {"max_connections": 3, "max_connections_per_ip": 0}
    with make_server(tmp_path, limits=limits) as server:
        kept = [LineClient(server.port) for _ in range(3)]
        for client in kept:
            client.read_line()
        assert LineClient(server.port).read_until_closed() == (
            b"-ERR [SYS/TEMP] Too many connections, try later.\r\n"
        )


def test_login_must_happen_in_time_even_when_chatty(tmp_path: Path) -> None:
    with make_server(tmp_path, limits={"login_timeout": 1}) as server:
        client = LineClient(server.port)
        client.read_line()
        started = time.monotonic()
        for _ in range(40):  # never silent for long, so the idle timeout never fires
            reply = client.command("AUTH")
            if not reply.startswith(b"+OK"):
                break
            client.read_multiline()
            time.sleep(0.1)
        assert reply == b"-ERR Disconnected: no login in the time allowed.\r\n"
        assert client.read_until_closed() == b""
        assert 0.9 < time.monotonic() - started < 3


@pytest.mark.parametrize(
    "junk",
    [b"A" * 60_000, b"USER \x00alice\r\n", b"USER \xff\xfe\xfd\r\n", b"\x00" * 1000 + b"\r\n"],
)
def test_hostile_bytes_then_a_normal_session(server: ServerThread, junk: bytes) -> None:
    client = LineClient(server.port)
    client.read_line()
    client.send(junk)
    assert client.read_line().startswith(b"-ERR")
    client.send(b"\r\n")  # end whatever line the junk left open
    client.send(b"USER alice\r\n")
    line = client.read_line()
    if line.startswith(b"-ERR"):  # the empty line above was an unknown command
        line = client.read_line()
    assert line == b"+OK Send the password.\r\n"
    assert client.command(f"PASS {ALICE_PASSWORD}").startswith(b"+OK Logged in")
