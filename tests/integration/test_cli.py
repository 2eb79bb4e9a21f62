"""The README's first command: `pop3d serve` on its embedded default, from nothing."""

from __future__ import annotations

import os
import poplib
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT


def start(args: list[str], cwd: Path) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pop3d", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "ready" in line and "pop3d" in line:
            return proc, lines
    proc.kill()
    raise AssertionError("".join(lines))


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def port_free() -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", 1110)) != 0


@pytest.mark.skipif(not port_free(), reason="something already listens on 127.0.0.1:1110")
def test_embedded_default_from_nothing(tmp_path: Path) -> None:
    proc, lines = start(["serve"], tmp_path)
    try:
        output = "".join(lines)
        match = re.search(r"user 'demo', password: (\S+)", output)
        assert match, output
        password = match.group(1)
        data = tmp_path / "pop3d-data"
        assert (data / "pop3d.toml").exists()
        assert (data / "users.passwd").exists()
        assert password not in (data / "users.passwd").read_text()
        pop = poplib.POP3("127.0.0.1", 1110, timeout=10)
        pop.user("demo")
        with pytest.raises(poplib.error_proto):
            pop.pass_("wrong")
        pop.user("demo")
        pop.pass_(password)
        count, _ = pop.stat()
        assert count == 1
        assert b"Subject: Welcome to pop3d" in pop.retr(1)[1]
        pop.dele(1)
        pop.quit()
        # Implicit TLS on 1995 with the self-signed certificate made on first run.
        context = ssl.create_default_context(cafile=str(data / "tls" / "cert.pem"))
        secure = poplib.POP3_SSL("localhost", 1995, context=context, timeout=10)
        assert "STLS" not in secure.capa()
        secure.quit()
        plain = poplib.POP3("127.0.0.1", 1110, timeout=10)
        assert "STLS" in plain.capa()
        plain.stls(context)
        plain.quit()
    finally:
        stop(proc)
    assert password not in "".join(lines[2:])  # printed once, never logged
    # A second run reuses the directory: same users, no new password.
    proc, lines = start(["serve", "--data-dir", str(tmp_path / "pop3d-data")], ROOT)
    try:
        assert "password" not in "".join(lines)
        pop = poplib.POP3("127.0.0.1", 1110, timeout=10)
        pop.user("demo")
        pop.pass_(password)
        assert pop.stat() == (0, 0)
        pop.quit()
    finally:
        stop(proc)


def test_a_bad_config_fails_before_listening(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nlisten = ["127.0.0.1:0"]\ntypo = 1\n')
    result = subprocess.run(
        [sys.executable, "-m", "pop3d", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 78
    assert "unknown key 'typo' in [server]" in result.stderr
    assert "listening" not in result.stderr


def test_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pop3d", "serve", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--data-dir" in result.stdout
