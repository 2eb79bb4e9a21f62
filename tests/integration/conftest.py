from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3d.testing import ServerThread

ALICE_PASSWORD = "secret pass"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread.in_directory(tmp_path, users={"alice": ALICE_PASSWORD, "bob": "bobpw"}) as s:
        yield s


class LineClient:
    """A bare socket client: what a person at telnet does, byte for byte."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line + b"\r\n"

    def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_multiline(self) -> bytes:
        out = self.read_line()
        while not out.endswith(b"\r\n.\r\n"):
            out += self.read_line()
        return out

    def command(self, line: str) -> bytes:
        self.send(line.encode() + b"\r\n")
        return self.read_line()

    def read_until_closed(self) -> bytes:
        data = self.buf
        self.buf = b""
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def message_files(server: ServerThread, user: str) -> list[str]:
    md = server.maildir(user)
    return sorted(os.listdir(md / "new") + os.listdir(md / "cur"))


class ServerProcess:
    """pop3d as its own process (for signals and kill -9)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pop3d", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.log: list[str] = []
        self.port = self._wait_listening()

    def _wait_listening(self) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("pop3d exited: " + "".join(self.log))
            self.log.append(line)
            if "listening on" in line:
                return int(line.rsplit(":", 1)[1])
        raise RuntimeError("pop3d did not start")

    def read_log(self) -> str:
        assert self.proc.stdout is not None
        rest = self.proc.stdout.read()
        self.log.append(rest)
        return "".join(self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def write_config(root: Path, users: dict[str, str], extra: str = "") -> Path:
    (root / "users.passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
    config = root / "pop3d.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\nshutdown_timeout = 5\n'
        '[auth]\npasswd_file = "users.passwd"\n'
        '[maildir]\npath = "mail/{user}/Maildir"\n' + extra
    )
    return config
