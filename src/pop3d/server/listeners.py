"""Listening sockets, bound before the event loop starts (and before workers are forked, so
every worker accepts on the same sockets)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field

from ..config import Address, Config
from ..daemon.privileges import Account, chown
from .net import format_address

log = logging.getLogger("pop3d.server")


@dataclass
class Listeners:
    plain: list[socket.socket] = field(default_factory=list)
    tls: list[socket.socket] = field(default_factory=list)
    lmtp: list[socket.socket] = field(default_factory=list)

    def close(self) -> None:
        for sock in [*self.plain, *self.tls, *self.lmtp]:
            with contextlib.suppress(OSError):
                sock.close()


def tcp(address: Address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    # IPv6 sockets are v6-only, so "0.0.0.0:110" and "[::]:110" can both be listed.
    sock = socket.create_server((address.host, address.port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


def unix(path: str, mode: int, owner: Account | None = None) -> socket.socket:
    """A unix socket at `path` with `mode`, owned by `owner` (when root made it)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a socket file left by a crash
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, mode)
        chown(path, owner)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind(config: Config, socket_owner: Account | None = None) -> Listeners:
    """The config's listeners; its LMTP unix sockets owned by `socket_owner`."""
    listeners = Listeners()
    try:
        listeners.plain = [tcp(a) for a in config.server.listen]
        listeners.tls = [tcp(a) for a in config.server.listen_tls]
        for endpoint in config.lmtp.listen:
            if endpoint.path is not None:
                mode = config.lmtp.socket_mode
                listeners.lmtp.append(unix(str(endpoint.path), mode, socket_owner))
            else:
                assert endpoint.address is not None
                listeners.lmtp.append(tcp(endpoint.address))
    except BaseException:
        listeners.close()
        raise
    for kind, socks in (
        ("plain", listeners.plain),
        ("implicit TLS", listeners.tls),
        ("LMTP", listeners.lmtp),
    ):
        for sock in socks:
            log.info("listening on %s (%s)", describe(sock), kind)
    return listeners


def describe(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, str):
        return name
    return format_address(name[0], name[1])
