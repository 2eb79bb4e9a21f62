"""HAProxy from Debian's package in front of pop3d nodes, as a cluster has it: `mode tcp`,
`send-proxy-v2`, round robin. It connects to the nodes from 127.0.0.3 (`source`), so a node
can tell the proxy (its `proxy_networks`) from the client the PROXY header names."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import free_port, running

PROXY_ADDRESS = "127.0.0.3"


def available() -> str | None:
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        return "haproxy is not installed (Debian package haproxy)"
    return None


@dataclass
class Frontends:
    plain: int  # POP3 (and STLS, which passes through)
    tls: int  # POP3S, the TLS passed through to the nodes' implicit-TLS ports


@contextmanager
def haproxy(directory: Path, plain: Sequence[int], tls: Sequence[int] = ()) -> Iterator[Frontends]:
    """HAProxy before the nodes' plain ports `plain` and implicit-TLS ports `tls`."""
    program = shutil.which("haproxy") or "/usr/sbin/haproxy"
    ports = Frontends(free_port(), free_port())

    def backend(name: str, nodes: Sequence[int]) -> str:
        servers = "".join(
            f"    server node{i} 127.0.0.1:{port} send-proxy-v2 source {PROXY_ADDRESS}\n"
            for i, port in enumerate(nodes)
        )
        return f"backend {name}\n    balance roundrobin\n{servers}"

    config = directory / "haproxy.cfg"
    config.write_text(
        "global\n    maxconn 2000\n"
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n"
        "    timeout server 60s\n"
        f"frontend pop3\n    bind 127.0.0.1:{ports.plain}\n    default_backend nodes\n"
        + backend("nodes", plain)
        + (f"frontend pop3s\n    bind 127.0.0.1:{ports.tls}\n    default_backend nodes_tls\n"
           + backend("nodes_tls", tls) if tls else "")
    )  # fmt: skip
    proc = subprocess.Popen(
        [program, "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    with running(proc, lambda: socket.create_connection(("127.0.0.1", ports.plain), 1).close(), 20):
        yield ports
