"""`pop3d who` and `pop3d kick` over the control socket, across workers."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pop3d.store.maildir import deliver
from tests.conftest import not_here, service_account
from tests.integration.conftest import ALICE_PASSWORD, LineClient, ServerProcess, write_config


def pop3d(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pop3d", *args], capture_output=True, text=True, timeout=60
    )


def login(port: int, user: str, password: str) -> LineClient:
    client = LineClient(port)
    client.read_line()
    client.command(f"USER {user}")
    assert client.command(f"PASS {password}").startswith(b"+OK Logged in")
    return client


def test_who_lists_every_worker_s_sessions_and_kick_ends_one(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, {"alice": ALICE_PASSWORD, "bob": "bobpw"},
        server='control_socket = "control.sock"\nworkers = 2\n',
    )  # fmt: skip
    maildir = tmp_path / "mail/alice/Maildir"
    deliver(maildir, [b"Subject: keep me\n\nbody\n"])
    server = ServerProcess(config)
    cfg = ["--config", str(config)]
    try:
        alice = login(server.port, "alice", ALICE_PASSWORD)
        assert alice.command("DELE 1").startswith(b"+OK")
        bobs = [login(server.port, "bob", "bobpw")]
        anonymous = LineClient(server.port)
        anonymous.read_line()
        deadline = time.monotonic() + 10
        while True:  # until both workers have taken some (each takes what it accepts)
            listed = json.loads(pop3d("who", *cfg, "--json").stdout)["sessions"]
            if len({s["pid"] for s in listed}) == 2 or time.monotonic() > deadline:
                break
            bobs.append(LineClient(server.port))
            bobs[-1].read_line()
        assert len({s["pid"] for s in listed}) == 2, listed
        assert set(server.workers) >= {s["pid"] for s in listed}
        by_user = {s["user"]: s for s in listed if s["user"]}
        assert set(by_user) == {"alice", "bob"}
        assert by_user["alice"]["state"] == "TRANSACTION"
        assert by_user["alice"]["listener"] == f"127.0.0.1:{server.port}"
        assert by_user["alice"]["tls"] is False
        assert by_user["alice"]["bytes_out"] > 0
        assert sum(1 for s in listed if s["user"] is None) == len(listed) - 2
        table = pop3d("who", *cfg).stdout.splitlines()
        assert table[0].split() == ["USER", "PEER", "LISTENER", "TLS", "STATE", "SINCE",
                                    "BYTES_OUT"]  # fmt: skip
        assert any(line.startswith("alice ") for line in table[1:])
        kicked = pop3d("kick", *cfg, "alice")
        assert (kicked.returncode, kicked.stdout) == (0, "kicked 1 session of alice\n")
        assert alice.read_until_closed() == b"-ERR Disconnected by the administrator.\r\n"
        # Its DELE mark went with it: the message is still there.
        assert len(os.listdir(maildir / "new")) == 1
        assert login(server.port, "alice", ALICE_PASSWORD).command("STAT") == b"+OK 1 26\r\n"
        assert json.loads(pop3d("kick", *cfg, "nobody", "--json").stdout) == {"kicked": 0}
        remaining = json.loads(pop3d("who", *cfg, "--json").stdout)["sessions"]
        assert "bob" in {s["user"] for s in remaining}
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()
    assert not (tmp_path / "control.sock").exists()  # removed at the end


def test_only_the_owner_may_use_the_control_socket(tmp_path: Path) -> None:
    account = service_account()
    if account is None:
        not_here("needs root: to connect as another account")
    config = write_config(tmp_path, {"alice": "pw"}, server='control_socket = "control.sock"\n')
    server = ServerProcess(config)
    try:
        st = (tmp_path / "control.sock").stat()
        assert st.st_mode & 0o777 == 0o600
        assert st.st_uid == pwd.getpwnam(account).pw_uid
        assert connect_as("nobody", tmp_path / "control.sock") == "PermissionError"
        assert pop3d("who", "--config", str(config)).returncode == 0  # root may, as the owner
    finally:
        server.stop()


def test_who_without_a_control_socket_or_a_server(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"alice": "pw"})
    missing = pop3d("who", "--config", str(config))
    assert (missing.returncode, missing.stderr.strip()) == (
        78, f"pop3d: {config}: no [server] control_socket"
    )  # fmt: skip
    config.write_text(config.read_text().replace("[auth]", 'control_socket = "c.sock"\n[auth]'))
    down = pop3d("kick", "--config", str(config), "alice")
    assert down.returncode == 69
    assert "cannot talk to pop3d at" in down.stderr


def connect_as(user: str, path: Path) -> str:
    """What connecting to `path` as `user` gives: "connected" or the error's name."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child only switches account, connects and says how it went
        outcome = "connected"
        try:
            os.setgid(pwd.getpwnam(user).pw_gid)
            os.setuid(pwd.getpwnam(user).pw_uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
        except OSError as exc:
            outcome = type(exc).__name__
        os.write(write, outcome.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as f:
        return f.read()
