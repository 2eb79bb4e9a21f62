"""Other programs run for real beside pop3d: Dovecot, Postfix, PostgreSQL, HAProxy."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on (for a program that cannot take port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unavailable(program: str, package: str) -> str | None:
    """Why a daemon that starts as root cannot run here, or None."""
    if shutil.which(program) is None:
        return f"{program} is not installed (Debian package {package})"
    if os.geteuid() != 0:
        return f"{program} needs root to start"
    return None


@contextmanager
def running(
    proc: subprocess.Popen[bytes], ready: Callable[[], object], timeout: float
) -> Iterator[None]:
    """Wait until `ready()` stops raising (the daemon `proc` serves), then stop it on exit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ready()
            break
        except (OSError, subprocess.CalledProcessError):
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"{proc.args!r} did not start: {out}") from None
            time.sleep(0.05)
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)
