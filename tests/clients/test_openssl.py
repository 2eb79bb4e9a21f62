"""`openssl s_client`: a person typing POP3 over TLS, so the test sees the raw wire.

s_client relays the server's octets unchanged (without -crlf it translates nothing): the test
pipes a whole session in (the server offers PIPELINING) and checks every octet of every
response, byte-stuffing included, against what RFC 1939 says the server must send. s_client
has no cleartext mode; plain POP3 on the wire is what tests/integration's LineClient covers.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from tests.clients.conftest import CLIENT_TIMEOUT, Target, assert_mailbox, expected_sizes
from tests.clients.corpus import CORPUS, dot_stuffed
from tests.conftest import require_program


class Wire:
    """The server's side of a session as s_client printed it, read a response at a time."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def line(self) -> bytes:
        end = self.data.index(b"\r\n", self.pos) + 2
        line, self.pos = self.data[self.pos : end], end
        return line

    def ok(self, pattern: bytes = rb".*") -> re.Match[bytes]:
        line = self.line()
        m = re.fullmatch(rb"\+OK(?: (" + pattern + rb"))?\r\n", line)
        assert m, f"expected +OK {pattern!r}, got {line!r}"
        return m

    def multiline_body(self) -> bytes:
        """The octets after the status line up to and including CRLF.CRLF."""
        start = self.pos
        end = self.data.find(b"\r\n.\r\n", self.pos - 2)
        assert end >= 0, f"no end of a multi-line response after octet {start}"
        self.pos = end + 5
        return self.data[start : self.pos]


def unstuff(body: bytes) -> bytes:
    lines = body.split(b"\r\n")[:-2]  # the "." line and what follows its CRLF
    return b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)


def s_client(target: Target, commands: list[str]) -> bytes:
    """Runs s_client with `commands` on its stdin; returns its stdout, the server's side."""
    exe = require_program("openssl")
    argv = [exe, "s_client", "-connect", f"{target.host}:{target.port}"]
    if target.transport == "stls":
        argv += ["-starttls", "pop3"]
    argv += [
        "-CAfile",
        target.ca_file,
        "-verify_return_error",  # a certificate that does not verify ends the handshake
        "-verify_ip",
        target.host,
        "-quiet",  # no session dump on stdout; implies -ign_eof: read until the server closes
    ]
    session = "".join(c + "\r\n" for c in commands).encode()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=target.env(),
        cwd=target.workdir,
    )
    watchdog = threading.Timer(CLIENT_TIMEOUT, proc.kill)
    watchdog.start()
    try:
        # All commands at once, before the greeting, as `printf ... | openssl s_client` does:
        # over implicit TLS they may travel with the end of the handshake.
        out, err = proc.communicate(session)
    finally:
        watchdog.cancel()
    assert proc.returncode == 0, (proc.returncode, err[-2000:])
    return out


@pytest.mark.parametrize("target", ["stls", "tls"], indirect=True)
@pytest.mark.parametrize("delete", [False, True], ids=["keep", "delete"])
def test_openssl_s_client_wire(target: Target, delete: bool) -> None:
    n = len(CORPUS)
    sizes = expected_sizes()
    commands = [f"USER {target.user}", f"PASS {target.password}", "STAT", "LIST"]
    commands += [f"RETR {i}" for i in range(1, n + 1)]
    if delete:
        commands += [f"DELE {i}" for i in range(1, n + 1)]
    commands += ["QUIT"]
    wire = Wire(s_client(target, commands))
    if target.transport == "tls":
        wire.ok(rb"POP3 server ready\.")
    # With -starttls pop3, s_client reads the greeting and the +OK to STLS itself.
    wire.ok()
    wire.ok(rb"Logged in, %d messages \(%d octets\)\." % (n, sum(sizes)))
    assert wire.ok(rb"\d+ \d+").group(1) == f"{n} {sum(sizes)}".encode()
    wire.ok()
    listing = "".join(f"{i} {s}\r\n" for i, s in enumerate(sizes, 1)) + ".\r\n"
    assert wire.multiline_body() == listing.encode()
    got = []
    for i, (name, data) in enumerate(CORPUS, 1):
        assert wire.ok(rb"(\d+) octets").group(2) == str(sizes[i - 1]).encode(), name
        body = wire.multiline_body()
        # The exact octets: CRLF line ends, every line that starts with "." stuffed, CRLF.CRLF.
        assert body == dot_stuffed(data), name
        got.append(unstuff(body))
    assert_mailbox(got, f"openssl s_client over {target.transport}")
    for _ in range(n if delete else 0):
        wire.ok()
    wire.ok()  # QUIT
    assert wire.pos == len(wire.data), wire.data[wire.pos :][:200]
    if delete:
        target.assert_emptied()
    else:
        target.assert_unchanged()


@pytest.mark.parametrize("target", ["tls"], indirect=True)
def test_implicit_tls_command_in_the_handshake_flight(target: Target) -> None:
    """What s_client does with piped input, made deterministic: the client's last handshake
    flight and its first command (before the greeting, as on a plain connection, where pop3d
    answers it) leave in one TCP write."""
    context = target.client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_3  # the client speaks last in TLS 1.3
    sock = socket.create_connection((target.host, target.port), timeout=5)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=target.host)
    with sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        tls.write(b"CAPA\r\n")
        sock.sendall(outgoing.read())  # Finished and the CAPA record together
        received = b""
        deadline = time.monotonic() + 1.5
        sock.settimeout(0.2)
        while not received.endswith(b"\r\n.\r\n") and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            incoming.write(chunk)
            try:
                while data := tls.read(65536):
                    received += data
            except ssl.SSLWantReadError:
                pass
    assert received.startswith(b"+OK POP3 server ready.\r\n+OK Capability list follows\r\n")
    assert received.endswith(b"\r\nUSER\r\nSASL PLAIN LOGIN SCRAM-SHA-256\r\n.\r\n")
