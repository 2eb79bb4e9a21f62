"""TLS for real: implicit TLS and STLS with poplib, curl and openssl; the STLS injection class."""

from __future__ import annotations

import asyncio.sslproto
import base64
import hashlib
import poplib
import signal
import ssl
import subprocess
import time
import warnings
from pathlib import Path

import pytest

from pop3d.testing import ServerThread
from pop3d.tls import TLS_READ_BUFFER
from tests.conftest import require_program
from tests.integration.conftest import (
    ALICE_PASSWORD,
    LineClient,
    ServerProcess,
    TlsFiles,
    make_tls_files,
    write_config,
)


def test_poplib_implicit_tls(tls_server: ServerThread, tls_files: TlsFiles) -> None:
    tls_server.deliver("alice", b"Subject: secret\n\nover TLS\n")
    pop = poplib.POP3_SSL(
        "127.0.0.1", tls_server.tls_port, context=tls_files.client_context(), timeout=10
    )
    assert pop.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert pop.sock.compression() is None
    assert "STLS" not in pop.capa()
    pop.user("alice")
    pop.pass_(ALICE_PASSWORD)
    assert pop.retr(1)[1] == [b"Subject: secret", b"", b"over TLS"]
    pop.quit()


def test_poplib_stls_and_capa_changes(tls_server: ServerThread, tls_files: TlsFiles) -> None:
    pop = poplib.POP3("127.0.0.1", tls_server.port, timeout=10)
    assert "STLS" in pop.capa()
    pop.stls(tls_files.client_context())
    caps = pop.capa()
    assert "STLS" not in caps
    assert "USER" in caps
    pop.user("alice")
    pop.pass_(ALICE_PASSWORD)
    assert pop.stat() == (0, 0)
    pop.quit()


def test_commands_pipelined_after_stls_are_not_executed(
    tls_server: ServerThread, tls_files: TlsFiles
) -> None:
    client = LineClient(tls_server.port)
    client.read_line()
    # An attacker on the path appends plaintext after STLS (CVE-2011-0411).
    client.send(b"STLS\r\nUSER alice\r\nCAPA\r\n")
    assert client.read_line() == b"+OK Begin TLS negotiation.\r\n"
    client.start_tls(tls_files.client_context())
    # Had "USER alice" run, this PASS would log in (or at least be tried).
    assert client.command(f"PASS {ALICE_PASSWORD}") == b"-ERR Send USER first.\r\n"
    assert client.command("USER alice") == b"+OK Send the password.\r\n"
    assert client.command(f"PASS {ALICE_PASSWORD}").startswith(b"+OK Logged in")


def test_stls_only_once_and_only_before_login(
    tls_server: ServerThread, tls_files: TlsFiles
) -> None:
    client = LineClient(tls_server.port)
    client.read_line()
    client.command("STLS")
    client.start_tls(tls_files.client_context())
    assert client.command("STLS") == b"-ERR TLS is already active.\r\n"
    implicit = LineClient(tls_server.tls_port, tls=tls_files.client_context())
    implicit.read_line()
    assert implicit.command("STLS") == b"-ERR TLS is already active.\r\n"
    implicit.command("USER alice")
    implicit.command(f"PASS {ALICE_PASSWORD}")
    assert implicit.command("STLS") == b"-ERR Not allowed after login.\r\n"


def test_stls_is_not_offered_without_a_certificate(server: ServerThread) -> None:
    client = LineClient(server.port)
    client.read_line()
    assert client.command("STLS") == b"-ERR STLS is not available.\r\n"


def test_failed_handshakes_close_only_their_connection(
    tls_server: ServerThread, tls_files: TlsFiles
) -> None:
    bystander = LineClient(tls_server.port)
    bystander.read_line()
    garbage = LineClient(tls_server.tls_port)  # plaintext to the TLS port
    garbage.send(b"USER alice\r\n" * 100)
    assert garbage.read_until_closed() == b""
    stls_garbage = LineClient(tls_server.port)
    stls_garbage.read_line()
    stls_garbage.command("STLS")
    stls_garbage.send(b"\x16\x03\x01\x00\x05hello")  # a broken ClientHello
    assert b"+OK" not in stls_garbage.read_until_closed()
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1  # below our TLS 1.2 floor
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with pytest.raises(ssl.SSLError):
        LineClient(tls_server.tls_port, tls=old)
    assert bystander.command("CAPA").startswith(b"+OK")
    assert (
        LineClient(tls_server.tls_port, tls=tls_files.client_context())
        .read_line()
        .startswith(b"+OK")
    )


def curl(*args: str) -> bytes:
    return subprocess.run(
        [require_program("curl"), "-sS", "--max-time", "20", *args], check=True, capture_output=True
    ).stdout


def test_curl_pop3s_and_stls(tls_server: ServerThread, tls_files: TlsFiles) -> None:
    tls_server.deliver("alice", b"Subject: c\n\nbody\n")
    auth = ["-u", f"alice:{ALICE_PASSWORD}", "--cacert", str(tls_files.ca_file)]
    assert curl(f"pop3s://localhost:{tls_server.tls_port}/", *auth) == b"1 20\r\n"
    assert (
        curl(f"pop3://localhost:{tls_server.port}/1", "--ssl-reqd", *auth)
        == b"Subject: c\r\n\r\nbody\r\n"
    )


def test_openssl_s_client_starttls(tls_server: ServerThread, tls_files: TlsFiles) -> None:
    tls_server.deliver("alice", b"Subject: o\n\nopenssl\n")
    result = subprocess.run(
        [
            require_program("openssl"),
            "s_client",
            "-quiet",
            "-starttls",
            "pop3",
            "-connect",
            f"127.0.0.1:{tls_server.port}",
            "-CAfile",
            str(tls_files.ca_file),
            "-verify_return_error",
        ],
        input=f"USER alice\r\nPASS {ALICE_PASSWORD}\r\nSTAT\r\nQUIT\r\n".encode(),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split(b"\r\n")
    assert b"+OK Logged in, 1 message (23 octets)." in lines
    assert b"+OK 1 23" in lines
    assert lines[-2] == b"+OK Logging out."


def _fingerprint(port: int) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = LineClient(port, tls=context)
    der = client.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
    client.close()
    return hashlib.sha256(der).hexdigest()


def test_sighup_reloads_the_certificate_without_dropping_sessions(tmp_path: Path) -> None:
    first = make_tls_files(tmp_path / "tls")
    config = write_config(
        tmp_path,
        {"alice": ALICE_PASSWORD},
        f'[tls]\ncert = "{first.cert}"\nkey = "{first.key}"\n',
    )
    config.write_text(
        config.read_text().replace(
            'listen = ["127.0.0.1:0"]', 'listen = ["127.0.0.1:0"]\nlisten_tls = ["127.0.0.1:0"]'
        )
    )
    server = ServerProcess(config)
    try:
        tls_port = server.tls_port
        before = _fingerprint(tls_port)
        session = LineClient(tls_port, tls=first.client_context())
        session.read_line()
        session.command("USER alice")
        assert session.command(f"PASS {ALICE_PASSWORD}").startswith(b"+OK")
        second = make_tls_files(tmp_path / "tls2")
        first.cert.write_bytes(second.cert.read_bytes())
        first.key.write_bytes(second.key.read_bytes())
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _fingerprint(tls_port) == before:
            assert time.monotonic() < deadline, "certificate not reloaded"
            time.sleep(0.05)
        assert session.command("NOOP") == b"+OK\r\n"  # the open session is untouched
        assert session.command("QUIT") == b"+OK Logging out.\r\n"
        fresh = LineClient(tls_port, tls=second.client_context())
        assert fresh.read_line().startswith(b"+OK")
    finally:
        server.stop()


def test_a_long_line_crosses_many_tls_reads_whole(
    tls_server: ServerThread, tls_files: TlsFiles
) -> None:
    # asyncio's TLS read buffer is trimmed to one record: a 53 KB SASL line takes four reads.
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER
    client = LineClient(tls_server.tls_port, tls=tls_files.client_context())
    client.read_line()
    client.send(b"AUTH PLAIN\r\n")
    assert client.read_line() == b"+ \r\n"
    wrong = base64.b64encode(b"\0alice\0" + b"x" * 40_000)
    client.send(wrong + b"\r\n")
    assert client.read_line().startswith(b"-ERR [AUTH] ")
    right = base64.b64encode(b"\0alice\0" + ALICE_PASSWORD.encode())
    client.send(b"AUTH PLAIN " + right + b"\r\n")
    assert client.read_line().startswith(b"+OK ")
