"""systemd: the shipped units pass `systemd-analyze verify`, pop3d serves on sockets that
`systemd-socket-activate` passes it, and tells a test-owned $NOTIFY_SOCKET what sd_notify
would: READY=1, RELOADING=1 and READY=1 around SIGHUP, STOPPING=1, STATUS=, WATCHDOG=1."""

from __future__ import annotations

import os
import poplib
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import hand_over, require_program, service_account
from tests.integration.conftest import (
    ALICE_PASSWORD,
    ROOT,
    ServerProcess,
    make_tls_files,
    write_config,
)
from tests.peers import free_port

UNITS = sorted((ROOT / "contrib/systemd").iterdir())


def test_the_units_verify_without_a_warning(tmp_path: Path) -> None:
    analyze = require_program("systemd-analyze")
    assert {u.name for u in UNITS} == {
        "pop3d.service", "pop3d.socket", "pop3d-tls.socket", "pop3d-lmtp.socket"
    }  # fmt: skip
    for unit in UNITS:
        # ExecStart names where `pip install` puts pop3d; verify checks that it is there.
        text = unit.read_text().replace(
            "/usr/local/bin/pop3d", str(Path(sys.executable).parent / "pop3d")
        )
        (tmp_path / unit.name).write_text(text)
    result = subprocess.run(
        [analyze, "verify", "--man=no", *(str(tmp_path / u.name) for u in UNITS)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""
    service = (ROOT / "contrib/systemd/pop3d.service").read_text()
    for hardening in (
        "Type=notify", "NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=",
        "PrivateTmp=yes", "ProtectHome=yes", "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service", "CapabilityBoundingSet=\n", "User=",
    ):  # fmt: skip
        assert hardening in service, hardening
    names = {re.search(r"FileDescriptorName=(\S+)", u.read_text()) for u in UNITS}
    assert {m.group(1) for m in names if m} == {"pop3", "pop3s", "lmtp"}


def test_socket_activation_serves_on_the_passed_sockets(tmp_path: Path) -> None:
    activate = require_program("systemd-socket-activate")
    tls = make_tls_files(tmp_path / "tls")
    config = write_config(
        tmp_path, {"alice": ALICE_PASSWORD},
        f'[tls]\ncert = "{tls.cert}"\nkey = "{tls.key}"\n',
        server='listen_tls = ["127.0.0.1:0"]\n',
    )  # fmt: skip
    hand_over(tmp_path, service_account())
    plain, implicit = free_port(), free_port()
    proc = subprocess.Popen(
        [activate, "-l", f"127.0.0.1:{plain}", "-l", f"127.0.0.1:{implicit}",
         "--fdname=pop3:pop3s", sys.executable, "-m", "pop3d", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        read_until(proc, rf"Listening on 127.0.0.1:{implicit} as 4")
        # Like a socket unit, systemd-socket-activate starts the service at the first
        # connection, which waits in the passed socket's backlog for pop3d to take it.
        pop = poplib.POP3("127.0.0.1", plain, timeout=30)
        lines = read_until(proc, r"pop3d \S+ ready")
        assert any("serving on the sockets systemd passed" in line for line in lines)
        assert not any("listening on" in line for line in lines)  # it bound nothing itself
        assert "STLS" in pop.capa()
        pop.stls(tls.client_context())
        pop.user("alice")
        pop.pass_(ALICE_PASSWORD)
        assert pop.stat() == (0, 0)
        pop.quit()
        secure = poplib.POP3_SSL("127.0.0.1", implicit, context=tls.client_context(), timeout=10)
        secure.user("alice")
        secure.pass_(ALICE_PASSWORD)
        secure.quit()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_socket_activation_with_names_pop3d_does_not_know(tmp_path: Path) -> None:
    activate = require_program("systemd-socket-activate")
    config = write_config(tmp_path, {"alice": ALICE_PASSWORD})
    hand_over(tmp_path, service_account())
    port = free_port()
    proc = subprocess.Popen(
        [activate, "-l", f"127.0.0.1:{port}", "--fdname=imap", sys.executable, "-m",
         "pop3d", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        read_until(proc, rf"Listening on 127.0.0.1:{port} as 3")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as first:
            assert proc.wait(timeout=30) == 78
            try:
                served = first.recv(100)
            except ConnectionResetError:  # closed in the backlog, never accepted
                served = b""
            assert served == b""  # no greeting: nothing was served
        assert proc.stdout is not None
        output = proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
    assert "pop3d: LISTEN_FDNAMES: 'imap' is not one of pop3, pop3s, lmtp" in output


def read_until(proc: subprocess.Popen[str], pattern: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("pop3d exited: " + "".join(lines))
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError("".join(lines))


class NotifySocket:
    """What systemd listens on: a datagram socket whose messages are kept in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o777)  # as systemd's: the service sends once it is no longer root
        self.messages: list[dict[str, str]] = []

    def next(self, timeout: float = 15) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        message = dict(line.split("=", 1) for line in data.split("\n") if line)
        self.messages.append(message)
        return message

    def until(self, key: str, timeout: float = 15) -> list[dict[str, str]]:
        """The messages up to the first that has `key`."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.1, deadline - time.monotonic()))
            seen.append(message)
            if key in message:
                return seen


@pytest.mark.parametrize("workers", [1, 2])
def test_notify_ready_reloading_stopping_status_and_watchdog(tmp_path: Path, workers: int) -> None:
    notify = NotifySocket(tmp_path / "notify")
    config = write_config(tmp_path, {"alice": ALICE_PASSWORD}, server=f"workers = {workers}\n")
    server = ServerProcess(
        config, env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    )
    try:
        (ready,) = [m for m in notify.until("READY") if "READY" in m]
        assert ready == {"READY": "1", "STATUS": "0 sessions"}
        assert "WATCHDOG" in notify.until("WATCHDOG")[-1]  # every half second
        pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
        pop.user("alice")
        pop.pass_(ALICE_PASSWORD)
        statuses = [m["STATUS"] for m in notify.until("STATUS", timeout=5) if "STATUS" in m]
        assert statuses == ["1 session"]
        pop.quit()
        server.proc.send_signal(signal.SIGHUP)
        reloading = next(m for m in notify.until("RELOADING") if "RELOADING" in m)
        assert reloading["RELOADING"] == "1"
        sent = int(reloading["MONOTONIC_USEC"])
        assert abs(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000 - sent) < 10_000_000
        after = notify.until("READY")
        assert "RELOADING" not in "".join(str(m) for m in after)
        assert after[-1]["READY"] == "1"
        server.proc.send_signal(signal.SIGTERM)
        assert "STOPPING" in notify.until("STOPPING")[-1]
        assert server.proc.wait(timeout=30) == 0
        order = [k for m in notify.messages for k in m if k in ("READY", "RELOADING", "STOPPING")]
        assert order == ["READY", "RELOADING", "READY", "STOPPING"]
    finally:
        server.stop()
        os.environ.pop("NOTIFY_SOCKET", None)
