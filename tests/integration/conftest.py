from __future__ import annotations

import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pop3d.testing import ServerThread
from tests.conftest import hand_over, service_account

ALICE_PASSWORD = "secret pass"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread.in_directory(tmp_path, users={"alice": ALICE_PASSWORD, "bob": "bobpw"}) as s:
        yield s


class LineClient:
    """A bare socket client: what a person at telnet does, byte for byte."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
        source: str | None = None,
    ) -> None:
        source_address = (source, 0) if source else None
        self.sock = socket.create_connection((host, port), 10, source_address)
        if tls is not None:
            self.sock = tls.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""

    def start_tls(self, context: ssl.SSLContext) -> None:
        assert self.buf == b"", "plaintext left over before the handshake"
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

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
    """pop3d as its own processes, a supervisor and its workers (for signals and kill -9).
    Its log is read as it comes, so a busy server never waits on a full pipe. As root, the
    directory of the config is handed to the account `write_config` names first."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        hand_over(config.parent, service_account())
        self.workers: list[int] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pop3d", "serve", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.log: list[str] = []
        self.ports: dict[str, int] = {}
        self._wait_ready()
        self.port = self.ports.get("plain", 0)
        self.tls_port = self.ports.get("implicit TLS", 0)
        self._reader = threading.Thread(target=self._read_rest, daemon=True)
        self._reader.start()

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)
            if started := re.search(r"worker (\d+) started", line):
                self.workers.append(int(started.group(1)))

    def _wait_ready(self) -> None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("pop3d exited: " + "".join(self.log))
            self.log.append(line)
            match = re.search(r"listening on .*:(\d+) \((.*)\)", line)
            if match:
                self.ports.setdefault(match.group(2), int(match.group(1)))
            if started := re.search(r"worker (\d+) started", line):
                self.workers.append(int(started.group(1)))
            if re.search(r"pop3d \S+ ready", line):
                return
        raise RuntimeError("pop3d did not start")

    def read_log(self) -> str:
        """Everything logged; waits for the process to exit."""
        self.proc.wait()
        self._reader.join()
        return "".join(self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.wait_gone()

    def wait_gone(self) -> None:
        """Until the workers are gone too (they die with the supervisor, a moment later)."""
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in self.workers):
            if time.monotonic() > deadline:
                raise AssertionError(f"workers {self.workers} outlived the supervisor")
            time.sleep(0.01)


def write_config(
    root: Path, users: dict[str, str], extra: str = "", server: str = "", auth: str = ""
) -> Path:
    """A config for `ServerProcess`; as root it names the account to serve as. `server` and
    `auth` are more keys of those sections, `extra` more sections."""
    (root / "users.passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
    account = service_account()
    config = root / "pop3d.toml"
    config.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\nshutdown_timeout = 5\n'
        f'event_loop = "{os.environ.get("POP3D_TEST_EVENT_LOOP", "auto")}"\n'
        + (f'user = "{account}"\n' if account else "")
        + server
        + '[auth]\npasswd_file = "users.passwd"\n'
        + auth
        + '[maildir]\npath = "mail/{user}/Maildir"\n'
        + extra
    )
    return config


@dataclass
class TlsFiles:
    ca: Any  # trustme.CA; None for a self-signed certificate, its own CA
    ca_file: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_tls_files(directory: Path) -> TlsFiles:
    trustme = pytest.importorskip("trustme")
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1", "::1")
    files = TlsFiles(ca, directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(files.ca_file)
    files.cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(files.key)
    return files


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def tls_server(tmp_path: Path, tls_files: TlsFiles) -> Iterator[ServerThread]:
    config = {
        "server": {"listen": ["127.0.0.1:0"], "listen_tls": ["127.0.0.1:0"]},
        "tls": {"cert": str(tls_files.cert), "key": str(tls_files.key)},
    }
    users = {"alice": ALICE_PASSWORD, "bob": "bobpw"}
    with ServerThread.in_directory(tmp_path / "srv", users=users, config=config) as s:
        yield s
