"""Other programs run for real beside pop3d: Dovecot, Postfix."""

from __future__ import annotations

import os
import shutil
import socket


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
