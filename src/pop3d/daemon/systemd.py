"""What systemd hands a service and what it wants to hear, without libsystemd.

Socket activation (sd_listen_fds(3)): `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` give the
listening sockets from descriptor 3 on, each named by its socket unit's `FileDescriptorName`:
`pop3` (plain, offers STLS), `pop3s` (implicit TLS) or `lmtp`.

Readiness (sd_notify(3)): datagrams to `$NOTIFY_SOCKET`, such as `READY=1`, `RELOADING=1`
with `MONOTONIC_USEC=`, `STOPPING=1`, `STATUS=...` and `WATCHDOG=1`. Both sets of variables
are removed from the environment once read, so the workers never act on them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from ..server.listeners import Listeners

SD_LISTEN_FDS_START = 3
NAMES = ("pop3", "pop3s", "lmtp")


class ActivationError(Exception):
    """What systemd passed cannot be used; the text names the variable."""


def listen_fds() -> Listeners | None:
    """The sockets systemd passed to this process, by name; None when it passed none."""
    pid, count, names = (os.environ.pop(v, None) for v in ("LISTEN_PID", "LISTEN_FDS",
                                                           "LISTEN_FDNAMES"))  # fmt: skip
    if count is None or pid is None or pid != str(os.getpid()):
        return None
    if not count.isdigit() or int(count) == 0:
        raise ActivationError(f"LISTEN_FDS: {count!r} is not a number of sockets")
    labels = (names or "").split(":")
    if len(labels) != int(count):
        raise ActivationError(
            f"LISTEN_FDNAMES: {names!r} does not name each of the {count} sockets "
            f"(FileDescriptorName= {', '.join(NAMES)})"
        )
    listeners = Listeners()
    for fd, label in enumerate(labels, SD_LISTEN_FDS_START):
        if label not in NAMES:
            raise ActivationError(f"LISTEN_FDNAMES: {label!r} is not one of {', '.join(NAMES)}")
        sock = socket.socket(fileno=fd)
        os.set_inheritable(fd, False)
        sock.setblocking(False)
        {"pop3": listeners.plain, "pop3s": listeners.tls, "lmtp": listeners.lmtp}[label].append(
            sock
        )
    return listeners


class Notifier:
    """sd_notify: silent when not run by systemd (no $NOTIFY_SOCKET)."""

    def __init__(self) -> None:
        address = os.environ.pop("NOTIFY_SOCKET", None)
        usec = os.environ.pop("WATCHDOG_USEC", None)
        watchdog_pid = os.environ.pop("WATCHDOG_PID", None)
        self._sock: socket.socket | None = None
        self._address = ""
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        # Half the deadline, as sd_watchdog_enabled(3) advises.
        mine = watchdog_pid is None or watchdog_pid == str(os.getpid())
        self.watchdog_interval = int(usec) / 2e6 if usec and usec.isdigit() and mine else None

    def send(self, *fields: str) -> None:
        if self._sock is None:
            return
        # systemd gone or not listening: nothing to tell it, nothing to stop for.
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(fields).encode(), self._address)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        monotonic = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")
