"""The PROXY protocol over real sockets: 127.0.0.1 is the proxy here, 127.0.0.2 a client
that connects directly."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3d.testing import ServerThread
from tests.integration.conftest import ALICE_PASSWORD, LineClient, TlsFiles, make_tls_files
from tests.unit.test_proxy import SSL_TLV, v2

V1 = b"PROXY TCP4 203.0.113.7 10.0.0.2 51234 110\r\n"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def proxied(tmp_path: Path, tls: TlsFiles) -> Iterator[ServerThread]:
    config = {
        "server": {"proxy_networks": ["127.0.0.1/32"], "listen_tls": ["127.0.0.1:0"]},
        "tls": {"cert": str(tls.cert), "key": str(tls.key)},
        "limits": {"proxy_header_timeout": 0.5, "max_connections_per_ip": 1},
    }
    with ServerThread.in_directory(
        tmp_path / "srv", users={"alice": ALICE_PASSWORD}, config=config
    ) as server:
        yield server


def raw(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), 10, (source, 0))


def greeted(sock: socket.socket, header: bytes) -> LineClient:
    sock.sendall(header)
    client = LineClient.__new__(LineClient)
    client.sock, client.buf = sock, b""
    assert client.read_line() == b"+OK POP3 server ready.\r\n"
    return client


def test_the_header_s_address_is_the_client_everywhere(
    proxied: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pop3d.session"):
        client = greeted(raw(proxied.port), V1)
        # 203.0.113.7 is not in cleartext_networks (127.0.0.1, the proxy's, is).
        client.send(b"CAPA\r\n")
        capabilities = client.read_multiline()
        assert b"USER\r\n" not in capabilities
        assert b"STLS\r\n" in capabilities
        assert client.command("USER alice").startswith(b"-ERR [AUTH] Plaintext authentication")
        # The per-address cap (1) counts 203.0.113.7, not the proxy.
        other = greeted(raw(proxied.port), V1.replace(b"203.0.113.7", b"203.0.113.8"))
        same = raw(proxied.port)
        same.sendall(V1)
        assert same.recv(100).startswith(b"-ERR [SYS/TEMP] Too many connections")
        other.close()
        client.close()
    assert "peer=203.0.113.7:51234 connect" in caplog.text
    assert "peer=127.0.0.1:" not in caplog.text  # the proxy is never taken for the client


def test_a_v2_ssl_tlv_counts_as_encrypted(proxied: ServerThread) -> None:
    client = greeted(raw(proxied.port), v2("2001:db8::7", 4000, tlvs=SSL_TLV))
    client.send(b"CAPA\r\n")
    capabilities = client.read_multiline()
    assert b"USER\r\n" in capabilities
    assert b"STLS" not in capabilities  # already encrypted, to the proxy
    client.command("USER alice")
    assert client.command(f"PASS {ALICE_PASSWORD}").startswith(b"+OK Logged in")


@pytest.mark.parametrize(
    "first",
    [b"USER alice\r\n", b"PROXY UNKNOWN\r\n", v2("203.0.113.7", 1, command=0x20),
     b"PROXY TCP4 1.2.3.4 bad\r\n", b""],
    ids=["no header", "UNKNOWN", "LOCAL", "malformed", "silence"],
)  # fmt: skip
def test_a_trusted_proxy_without_a_usable_header_is_cut_off_before_any_greeting(
    proxied: ServerThread, first: bytes
) -> None:
    sock = raw(proxied.port)
    sock.sendall(first)
    started = time.monotonic()
    with contextlib.suppress(ConnectionResetError):  # closed with our header unread
        assert sock.recv(100) == b""
    assert time.monotonic() - started < 3


def test_an_untrusted_client_s_header_is_never_parsed(proxied: ServerThread) -> None:
    client = LineClient(proxied.port, source="127.0.0.2")
    assert client.read_line() == b"+OK POP3 server ready.\r\n"  # at once: no header wanted
    assert client.command(V1.decode().strip()) == b"-ERR Unknown command.\r\n"


def test_implicit_tls_behind_a_proxy_in_tcp_mode(
    proxied: ServerThread, tls: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="pop3d.session"):
        sock = raw(proxied.tls_port)
        sock.sendall(v2("203.0.113.9", 5555))  # then the ClientHello, as HAProxy does
        client = LineClient.__new__(LineClient)
        client.sock = tls.client_context().wrap_socket(sock, server_hostname="localhost")
        client.buf = b""
        assert client.read_line() == b"+OK POP3 server ready.\r\n"
        client.command("USER alice")
        assert client.command(f"PASS {ALICE_PASSWORD}").startswith(b"+OK Logged in")
    assert "peer=203.0.113.9:5555 connect listener=" in caplog.text
    assert "tls=implicit" in caplog.text
