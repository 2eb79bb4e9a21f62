"""The control protocol: one JSON object per line.

Between `pop3d who|kick` and the supervisor, over the control socket (mode 0600, owned by the
account pop3d serves as): the command sends one request and reads one answer.

    {"op": "who"}                  ->  {"sessions": [{"user": ..., "peer": ..., ...}, ...]}
    {"op": "kick", "user": "bob"}  ->  {"kicked": 1}

Between the supervisor and each worker, over a socketpair made at the fork: the supervisor
passes requests on with an "id" and the worker answers with it; the worker also says when it
is ready, when it has reloaded, and, once a second, how many sessions it has (which is also
how the supervisor knows that its event loop still turns).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

MAX_LINE = 1 << 20
OPS = ("who", "kick")


class ControlError(Exception):
    """The control socket cannot be reached or answered nonsense."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any] | None:
    """The message on `line`, or None if it is not a JSON object."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None


def request(path: Path, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to a running pop3d; its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(encode(message))
            data = b""
            while not data.endswith(b"\n") and len(data) < MAX_LINE:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ControlError(f"cannot talk to pop3d at {path}: {exc.strerror or exc}") from None
    answer = decode(data)
    if answer is None:
        raise ControlError(f"pop3d at {path} answered nonsense")
    if "error" in answer:
        raise ControlError(str(answer["error"]))
    return answer
