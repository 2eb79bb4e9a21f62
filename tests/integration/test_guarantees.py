"""What the README promises: nothing lost, nothing deleted without QUIT, limits that hold."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from pop3d.store.maildir import deliver
from pop3d.testing import ServerThread
from tests.integration.conftest import (
    ALICE_PASSWORD,
    LineClient,
    ServerProcess,
    message_files,
    write_config,
)


def login(client: LineClient, user: str = "alice", password: str = ALICE_PASSWORD) -> bytes:
    client.read_line()
    assert client.command(f"USER {user}") == b"+OK Send the password.\r\n"
    return client.command(f"PASS {password}")


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    write_config(tmp_path, {"alice": ALICE_PASSWORD})
    return tmp_path


def maildir(root: Path) -> Path:
    return root / "mail/alice/Maildir"


def test_kill_9_during_a_session_deletes_nothing(proc_root: Path) -> None:
    for i in range(5):
        deliver(maildir(proc_root), [b"Subject: %d\n\nbody\n" % i])
    before = sorted(os.listdir(maildir(proc_root) / "new"))
    server = ServerProcess(proc_root / "pop3d.toml")
    try:
        client = LineClient(server.port)
        assert login(client).startswith(b"+OK")
        for i in range(1, 6):
            client.command(f"DELE {i}")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    finally:
        server.stop()
    assert sorted(os.listdir(maildir(proc_root) / "new")) == before
    # The lock died with the process: a new server serves the maildrop at once.
    server = ServerProcess(proc_root / "pop3d.toml")
    try:
        assert login(LineClient(server.port)) == b"+OK Logged in, 5 messages (100 octets).\r\n"
    finally:
        server.stop()


def test_kill_9_during_update_never_loses_or_half_deletes(proc_root: Path) -> None:
    bodies = {}
    for i in range(3000):
        name = deliver(maildir(proc_root), [b"Subject: %d\n\n" % i + b"x" * 100 + b"\n"])
        bodies[name] = i
    server = ServerProcess(proc_root / "pop3d.toml")
    try:
        client = LineClient(server.port)
        assert login(client).startswith(b"+OK Logged in, 3000 messages")
        client.send(b"".join(b"DELE %d\r\n" % i for i in range(1, 3001)))
        for _ in range(3000):
            client.read_line()
        client.send(b"QUIT\r\n")
        time.sleep(0.005)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    finally:
        server.stop()
    left = os.listdir(maildir(proc_root) / "new")
    for name in left:  # whatever survived is whole
        i = bodies[name]
        assert (
            maildir(proc_root) / "new" / name
        ).read_bytes() == b"Subject: %d\n\n" % i + b"x" * 100 + b"\n"
    assert set(left) <= set(bodies)
    assert os.listdir(maildir(proc_root) / "tmp") == []


def test_sigterm_lets_sessions_finish_then_cuts_them_off(proc_root: Path) -> None:
    for i in range(2):
        deliver(maildir(proc_root), [b"m%d\n" % i])
    (proc_root / "users.passwd").write_text(
        f"alice:{{PLAIN}}{ALICE_PASSWORD}\nbob:{{PLAIN}}bobpw\n"
    )
    deliver(proc_root / "mail/bob/Maildir", [b"bob's\n"])
    server = ServerProcess(proc_root / "pop3d.toml")
    try:
        lingering = LineClient(server.port)
        assert login(lingering).startswith(b"+OK")
        lingering.command("DELE 1")
        finishing = LineClient(server.port)
        assert login(finishing, "bob", "bobpw").startswith(b"+OK")
        finishing.command("DELE 1")
        not_logged_in = LineClient(server.port)
        not_logged_in.read_line()
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        # Not logged in: told at once. Listeners are closed.
        assert not_logged_in.read_until_closed() == b"-ERR [SYS/TEMP] Server shutting down.\r\n"
        with pytest.raises(OSError):
            wait_for(
                lambda: socket.create_connection(("127.0.0.1", server.port), timeout=1) and False, 2
            )
        # A session that QUITs within the grace period is served in full.
        assert finishing.command("QUIT") == b"+OK Logging out, 1 message deleted.\r\n"
        # One that does not is cut off after shutdown_timeout (5 s) and commits nothing.
        assert lingering.read_until_closed() == b"-ERR [SYS/TEMP] Server shutting down.\r\n"
        assert 4 < time.monotonic() - started < 15
        assert server.proc.wait(timeout=20) == 0
    finally:
        server.stop()
    assert len(os.listdir(maildir(proc_root) / "new")) == 2
    assert os.listdir(proc_root / "mail/bob/Maildir/new") == []


def test_retr_of_50_mb_streams_in_bounded_memory(proc_root: Path) -> None:
    line = b"0123456789" * 7 + b"\n"
    body = b"Subject: big\n\n" + line * (50 * 1024 * 1024 // len(line))
    deliver(maildir(proc_root), [body])
    server = ServerProcess(proc_root / "pop3d.toml")
    try:
        client = LineClient(server.port)
        assert login(client).startswith(b"+OK")
        (worker,) = server.workers
        status = f"/proc/{worker}/status"
        hwm_before = _kib(status, "VmHWM")
        client.send(b"RETR 1\r\n")
        assert client.read_line() == b"+OK %d octets\r\n" % (len(body) + body.count(b"\n"))
        received, tail = len(client.buf), client.buf[-5:]
        client.buf = b""
        # Read slowly at first so the server must wait for the transport to drain.
        while tail != b"\r\n.\r\n":
            chunk = client.sock.recv(1 << 20)
            assert chunk, "connection closed mid-message"
            received += len(chunk)
            tail = (tail + chunk)[-5:]
            if received < 5 * 1024 * 1024:
                time.sleep(0.01)
        assert received == len(body) + body.count(b"\n") + 3
        grown = _kib(status, "VmHWM") - hwm_before
        assert grown < 24 * 1024, f"peak RSS grew by {grown} KiB for a 50 MB message"
        assert client.command("NOOP") == b"+OK\r\n"
    finally:
        server.stop()


def _kib(status: str, field: str) -> int:
    for line in Path(status).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_a_dropped_retr_deletes_nothing_and_frees_the_lock(server: ServerThread) -> None:
    server.deliver("alice", b"Subject: big\n\n" + b"y" * (8 << 20) + b"\n")
    client = LineClient(server.port)
    login(client)
    client.command("DELE 1")
    client.command("RSET")
    client.command("DELE 1")
    client.send(b"RETR 1\r\n")
    client.sock.recv(1000)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # reset mid-stream
    wait_for(lambda: login(LineClient(server.port)).startswith(b"+OK"))
    assert len(message_files(server, "alice")) == 1


def test_many_pipelined_commands_are_answered_in_order(server: ServerThread) -> None:
    for i in range(3):
        server.deliver("alice", b"Subject: %d\n\nbody %d\n" % (i, i))
    client = LineClient(server.port)
    login(client)
    commands = [b"STAT", b"LIST 1", b"RETR 2", b"NOOP", b"UIDL 3", b"TOP 1 0"] * 500
    client.send(b"".join(c + b"\r\n" for c in commands))
    for command in commands:
        if command in (b"RETR 2", b"TOP 1 0"):
            reply = client.read_multiline()
            assert reply.startswith(b"+OK"), command
            assert (b"body 1" in reply) == (command == b"RETR 2")
        else:
            assert client.read_line().startswith(b"+OK"), command


def test_a_60_kb_line_without_crlf_then_a_normal_session(server: ServerThread) -> None:
    # Within max_line_length + 64 KiB the line may still end, and the session goes on.
    client = LineClient(server.port)
    client.read_line()
    client.send(b"USER " + b"A" * 60_000)
    assert client.read_line() == b"-ERR Line too long (more than 2048 octets).\r\n"
    client.send(b"\r\n")
    client.send(b"USER alice\r\n")
    assert client.read_line() == b"+OK Send the password.\r\n"
    assert client.command(f"PASS {ALICE_PASSWORD}").startswith(b"+OK Logged in")


def test_a_100_kb_line_without_crlf_is_cut_off(server: ServerThread) -> None:
    client = LineClient(server.port)
    client.read_line()
    client.send(b"USER " + b"A" * 100_000)
    assert client.read_until_closed() == (
        b"-ERR Line too long (more than 2048 octets).\r\n-ERR Line too long.\r\n"
    )


def test_garbage_gets_disconnected(server: ServerThread) -> None:
    client = LineClient(server.port)
    client.read_line()
    client.send(b"\x00\xff garbage\r\n" * 10)
    assert (
        client.read_until_closed()
        == b"-ERR Unknown command.\r\n" * 4 + b"-ERR Too many bad commands.\r\n"
    )


def test_a_message_removed_by_another_program(server: ServerThread) -> None:
    server.deliver("alice", b"one\n")
    server.deliver("alice", b"two\n")
    client = LineClient(server.port)
    login(client)
    first = sorted((server.maildir("alice") / "new").iterdir())[0]
    first.unlink()
    assert client.command("RETR 1") == b"-ERR Message 1 was removed by another client.\r\n"
    client.command("DELE 1")
    client.command("DELE 2")
    assert client.command("QUIT") == b"+OK Logging out, 2 messages deleted.\r\n"
    assert message_files(server, "alice") == []


def test_passwd_file_changes_apply_without_restart(server: ServerThread) -> None:
    assert login(LineClient(server.port)).startswith(b"+OK")
    passwd = server.config.passwd_file
    passwd.write_text("alice:{PLAIN}new password\n")
    os.utime(passwd, ns=(time.time_ns(), time.time_ns() + 1_000_000_000))
    wait_for(lambda: login(LineClient(server.port), password="new password").startswith(b"+OK"))
    assert login(LineClient(server.port)) == b"-ERR [AUTH] Authentication failed.\r\n"


@pytest.mark.parametrize("name", ["../alice", "alice/../../etc", "/etc/passwd", "..", ".alice"])
def test_user_names_that_escape_the_mail_root_never_log_in(server: ServerThread, name: str) -> None:
    before = sorted(p for p in server.config.passwd_file.parent.rglob("*"))
    assert login(LineClient(server.port), name, "x") == b"-ERR [AUTH] Authentication failed.\r\n"
    assert sorted(p for p in server.config.passwd_file.parent.rglob("*")) == before


def test_idle_timeout_before_login(tmp_path: Path) -> None:
    config = {"limits": {"idle_timeout_authorization": 1}}
    with ServerThread.in_directory(tmp_path, users={"alice": "x"}, config=config) as server:
        client = LineClient(server.port)
        client.read_line()
        started = time.monotonic()
        assert client.read_until_closed() == b"-ERR Disconnected for inactivity.\r\n"
        assert 0.9 < time.monotonic() - started < 5
