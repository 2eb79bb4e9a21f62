"""bench/peers/twisted_pop3.py: Twisted's POP3 server serves our Maildirs, plain and over TLS.

Starts the script as a subprocess on free ports, talks to it with poplib (POP3 and POP3_SSL)
and with a raw socket, and pins the Twisted behaviours that the script's docstring lists, so
that a Twisted upgrade that changes them is noticed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import poplib
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.peers import free_port

if os.environ.get("CI") == "true":
    import OpenSSL  # noqa: F401  (CI must have them: fail there rather than skip)
    import twisted  # noqa: F401
else:
    pytest.importorskip("twisted")
    pytest.importorskip("OpenSSL")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "peers" / "twisted_pop3.py"
START_TIMEOUT = 30.0
HOST = "127.0.0.1"

PASSWD = """\
# Dovecot-style passwd-file
alice:{PLAIN}secret::::::

bob:{PLAIN}pa ss:1000:1000::/home/bob::
carol:{SHA512-CRYPT}$6$x$y::::::
"""
# The last entry is not {PLAIN}: the script skips it with one line on stderr.
SKIPPED_NOTICE = "not a {PLAIN} entry, skipped"

MESSAGES = {
    "alice": {
        "1700000000.M1P1.host": (
            b"From: bob@example.org\nTo: alice@example.org\nSubject: first\n\n"
            b"Hello Alice.\n.A line that starts with a dot.\n..two dots\n.\nend\n"
        ),
        "1700000001.M2P1.host": b"Subject: second\n\nshort\n",
        "1700000002.M3P1.host": (
            b"Subject: third\n\n" + b"".join(b"line %05d\n" % n for n in range(4000))
        ),
    },
    "bob": {
        "1700000100.M1P2.host": b"Subject: for bob\n\nHi Bob.\n.dotted\nbye\n",
    },
}


def uidl(name: str) -> bytes:
    """What Twisted's MaildirMailbox.getUidl answers: the MD5 hex digest of the base name."""
    return hashlib.md5(name.encode()).hexdigest().encode()


def as_retrieved(content: bytes) -> list[bytes]:
    """The lines poplib returns for a message stored with LF (CRLF split off, dots unstuffed)."""
    assert content.endswith(b"\n")
    return content[:-1].split(b"\n")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    tls_port: int
    root: Path
    stderr: Path
    ca: trustme.CA

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user / "Maildir"

    def errors(self) -> str:
        return self.stderr.read_text(errors="replace")

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def make_tree(root: Path) -> None:
    (root / "passwd").write_text(PASSWD)
    for user, messages in MESSAGES.items():
        maildir = root / "mail" / user / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        for name, content in messages.items():
            (maildir / "new" / name).write_bytes(content)


def write_certs(root: Path) -> tuple[trustme.CA, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    chain, key = root / "cert.pem", root / "key.pem"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return ca, chain, key


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, then wait; SIGKILL if it does not go. The exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def wait_listening(proc: subprocess.Popen[bytes], stderr: Path) -> str:
    """The "listening ..." line, read with a deadline; fails with stderr if it does not come."""
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(
                    f"no 'listening' line in {START_TIMEOUT} s; stderr:\n{stderr.read_text()}"
                )
            if not selector.select(timeout=left):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                proc.wait(timeout=10)
                pytest.fail(
                    f"server exited ({proc.returncode}) before listening; stderr:\n"
                    f"{stderr.read_text()}"
                )
            buffer += chunk
    line, _, rest = buffer.partition(b"\n")
    assert rest == b"", f"more than one line on stdout: {buffer!r}"
    return line.decode()


@contextlib.contextmanager
def running(root: Path, *, tls: bool) -> Iterator[Server]:
    make_tree(root)
    ca, chain, key = write_certs(root)
    port, tls_port = free_port(), (free_port() if tls else 0)
    command = [
        sys.executable,
        str(SCRIPT),
        "--passwd",
        str(root / "passwd"),
        "--mail",
        str(root / "mail" / "{user}" / "Maildir"),
        "--port",
        str(port),
        "--host",
        HOST,
    ]
    if tls:
        command += ["--tls-port", str(tls_port), "--cert", str(chain), "--key", str(key)]
    stderr = root / "stderr.txt"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
        )
    try:
        line = wait_listening(proc, stderr)
        assert line == f"listening plain={port} tls={tls_port}"
        yield Server(proc, port, tls_port, root, stderr, ca)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("twisted-peer"), tls=True) as srv:
        yield srv


def login(srv: Server, user: str, password: str, *, tls: bool = False) -> poplib.POP3:
    if tls:
        client: poplib.POP3 = poplib.POP3_SSL(
            HOST, srv.tls_port, context=srv.ssl_context(), timeout=10
        )
    else:
        client = poplib.POP3(HOST, srv.port, timeout=10)
    assert client.getwelcome().startswith(b"+OK")
    client.user(user)
    client.pass_(password)
    return client


def check_mailbox(client: poplib.POP3, user: str) -> None:
    """STAT, LIST, UIDL and RETR give back exactly the files of `user`'s Maildir, in name order."""
    messages = sorted(MESSAGES[user].items())
    # Twisted counts octets on disk (LF), not as sent (CRLF).
    sizes = [len(content) for _, content in messages]
    assert client.stat() == (len(messages), sum(sizes))
    _, listing, _ = client.list()
    assert listing == [b"%d %d" % (n, size) for n, size in enumerate(sizes, 1)]
    _, uids, _ = client.uidl()
    assert uids == [b"%d %s" % (n, uidl(name)) for n, (name, _) in enumerate(messages, 1)]
    assert client.uidl(1) == b"+OK " + uidl(messages[0][0])
    for n, (_, content) in enumerate(messages, 1):
        _, lines, _ = client.retr(n)
        assert lines == as_retrieved(content)


def test_plain_session(server: Server) -> None:
    client = login(server, "alice", "secret")
    try:
        check_mailbox(client, "alice")
        _, lines, _ = client.top(1, 1)
        assert lines == [
            *as_retrieved(MESSAGES["alice"]["1700000000.M1P1.host"])[:4],
            b"Hello Alice.",
        ]
        assert client.noop().startswith(b"+OK")
    finally:
        assert client.quit().startswith(b"+OK")
    # A session that reads and quits leaves the Maildir as it was.
    assert sorted(p.name for p in (server.maildir("alice") / "new").iterdir()) == sorted(
        MESSAGES["alice"]
    )


def test_tls_session(server: Server) -> None:
    client = login(server, "bob", "pa ss", tls=True)
    try:
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.version() in {"TLSv1.2", "TLSv1.3"}
        check_mailbox(client, "bob")
    finally:
        client.quit()


def test_both_users_over_both_listeners(server: Server) -> None:
    for user, password in (("alice", "secret"), ("bob", "pa ss")):
        for tls in (False, True):
            client = login(server, user, password, tls=tls)
            try:
                assert client.stat()[0] == len(MESSAGES[user])
            finally:
                client.quit()


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("alice", "wrong"),
        ("alice", "Secret"),
        ("bob", "pa"),
        ("nobody", "secret"),
        ("carol", "x"),  # not {PLAIN}: not loaded
        ("carol", "{SHA512-CRYPT}$6$x$y"),
    ],
)
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_wrong_password_refused(server: Server, user: str, password: str, tls: bool) -> None:
    if tls:
        client: poplib.POP3 = poplib.POP3_SSL(
            HOST, server.tls_port, context=server.ssl_context(), timeout=10
        )
    else:
        client = poplib.POP3(HOST, server.port, timeout=10)
    try:
        client.user(user)
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR"):
            client.pass_(password)
        with pytest.raises(poplib.error_proto, match="not authenticated"):
            client.stat()
        # The same connection may still log in properly afterwards.
        client.user("alice")
        client.pass_("secret")
        assert client.stat()[0] == len(MESSAGES["alice"])
    finally:
        client.quit()


def test_dele_moves_to_trash_at_once_and_quit_keeps_it(server: Server) -> None:
    maildir = server.maildir("bob")
    name, content = "1700000200.M9P2.host", b"Subject: delete me\n\nbye\n"
    (maildir / "new" / name).write_bytes(content)
    client = login(server, "bob", "pa ss")
    try:
        _, uids, _ = client.uidl()
        number = next(int(line.split()[0]) for line in uids if line.split()[1] == uidl(name))
        client.dele(number)
        # Twisted renames the file at DELE, not at QUIT.
        assert not (maildir / "new" / name).exists()
        assert (maildir / ".Trash" / "cur" / name).read_bytes() == content
        _, listing, _ = client.list()
        assert b"%d 0" % number in listing  # still listed, size 0
        with pytest.raises(poplib.error_proto, match="deleted"):
            client.retr(number)
    finally:
        client.quit()
    assert (maildir / ".Trash" / "cur" / name).exists()
    client = login(server, "bob", "pa ss")
    try:
        check_mailbox(client, "bob")  # the other message is untouched
    finally:
        client.quit()


def test_rset_undeletes(server: Server) -> None:
    client = login(server, "alice", "secret")
    try:
        client.dele(2)
        assert not (server.maildir("alice") / "new" / "1700000001.M2P1.host").exists()
        client.rset()
        check_mailbox(client, "alice")
    finally:
        client.quit()
    assert (server.maildir("alice") / "new" / "1700000001.M2P1.host").exists()


class Raw:
    """A bare POP3 connection: the exact bytes Twisted sends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=10)
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"+OK")

    def command(self, line: str, *, multiline: bool = False) -> bytes:
        self.sock.sendall(line.encode() + b"\r\n")
        reply = self.file.readline()
        if multiline and reply.startswith(b"+OK"):
            while not reply.endswith(b"\r\n.\r\n"):
                chunk = self.file.readline()
                if not chunk:
                    break
                reply += chunk
        return reply

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_twisted_quirks_as_documented(server: Server) -> None:
    """What the script's docstring says Twisted does; each differs from RFC 1939 and pop3d."""
    new = server.maildir("alice") / "new"
    quirks = {
        # Sorted after alice's messages: numbers 4, 5, 6.
        "1800000000.M1P1.host": b".leading dot\nSubject: x\n\nbody\n",
        "1800000001.M1P1.host": b"Subject: crlf\r\n\r\nbody\r\n",
        # A line starting with a dot right at the first 16 KiB boundary of the file.
        "1800000002.M1P1.host": b"Subject: y\n\n" + b"x" * (16384 - 13) + b"\n.at boundary\nend\n",
    }
    for name, content in quirks.items():
        (new / name).write_bytes(content)
    raw = Raw(server.port)
    try:
        assert raw.command("USER alice").startswith(b"+OK")
        assert raw.command("PASS secret").startswith(b"+OK")
        # Not dot-stuffed at the start of the message.
        assert raw.command("RETR 4", multiline=True) == (
            b"+OK %d\r\n.leading dot\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
            % len(quirks["1800000000.M1P1.host"])
        )
        # CRLF on disk becomes CR CR LF; the size is the one on disk.
        assert raw.command("RETR 5", multiline=True) == (
            b"+OK %d\r\nSubject: crlf\r\r\n\r\r\nbody\r\r\n.\r\n"
            % len(quirks["1800000001.M1P1.host"])
        )
        # Not dot-stuffed at a 16 KiB read boundary (a middle line elsewhere is: see above).
        reply = raw.command("RETR 6", multiline=True)
        assert reply.endswith(b"x\r\n.at boundary\r\nend\r\n.\r\n")
        # A deleted message still counts in STAT.
        assert raw.command("DELE 2") == b"+OK \r\n"
        count = len(MESSAGES["alice"]) + len(quirks)
        size = sum(map(len, MESSAGES["alice"].values())) + sum(map(len, quirks.values()))
        assert raw.command("STAT") == b"+OK %d %d\r\n" % (
            count,
            size - len(MESSAGES["alice"]["1700000001.M2P1.host"]),
        )
        assert raw.command("RSET") == b"+OK \r\n"
        # DELE of a number out of range: no reply, the connection is dropped.
        assert raw.command("DELE 99") == b""
    finally:
        raw.close()
        for name in quirks:
            (new / name).unlink()
    # UIDL after DELE never answers, and dropping the connection does not undelete.
    (new / "1800000003.M1P1.host").write_bytes(b"Subject: z\n\nz\n")
    raw = Raw(server.port)
    try:
        raw.command("USER alice")
        raw.command("PASS secret")
        assert raw.command("DELE 4") == b"+OK \r\n"
        raw.sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            raw.command("UIDL", multiline=True)
    finally:
        raw.close()
    trash = server.maildir("alice") / ".Trash" / "cur" / "1800000003.M1P1.host"
    for _ in range(50):  # the server sees the close asynchronously
        if trash.exists():
            break
        time.sleep(0.05)
    assert trash.exists()
    assert not (new / "1800000003.M1P1.host").exists()
    trash.unlink()
    # Each of these left a traceback on stderr, and the server goes on serving.
    errors = server.errors()
    assert "IndexError" in errors
    assert "TypeError" in errors
    client = login(server, "alice", "secret")
    try:
        check_mailbox(client, "alice")
    finally:
        client.quit()


def test_quiet_and_clean_exit_on_sigterm(tmp_path: Path) -> None:
    with running(tmp_path, tls=True) as srv:
        for tls in (False, True):
            client = login(srv, "alice", "secret", tls=tls)
            client.retr(1)
            client.quit()
        # Nothing per session on stderr: only the note about the skipped passwd-file entry.
        lines = srv.errors().splitlines()
        assert len(lines) == 1
        assert SKIPPED_NOTICE in lines[0]
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=10) == 0
        assert srv.errors().splitlines() == lines
        assert srv.proc.stdout is not None
        assert srv.proc.stdout.read() == b""
