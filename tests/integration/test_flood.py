"""Lines that never end: each costs at most its first max_line_length + 64 KiB, and the
clients that behave are served as fast as on an idle server while the flood goes on.

The server runs as its own process, the flood comes from another one (four connections
from 127.0.0.1 that each send one line without end, and connect again when cut off), and
a normal client in the test process logs in and retrieves a message over and over, first
on the idle server, then during the flood. Cutting a line off bounds what one connection
costs; the flooding address then waits longer at each connection (the failed-login
penalty's delays), which bounds how often it can start over.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pop3d.protocol.lines import ENDLESS_MARGIN
from pop3d.store.maildir import deliver
from tests.integration.conftest import LineClient, ServerProcess, write_config

FLOODERS = 4
FLOOD_SECONDS = 6.0
MAX_LINE = 2048
# The transport reads up to 256 KiB at once; what is in the read that crosses the margin is
# dropped unread, but it was received.
ONE_READ = 256 * 1024
# The flood comes from 127.0.0.1; the normal client from another loopback address, as it
# would from another host: an address that floods is made to wait, whoever else uses it.
CLIENT_ADDRESS = "127.0.0.2"

FLOOD = r"""
import socket, sys, threading, time

host, port, seconds, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
chunk = b"x" * 65536
stop = time.monotonic() + seconds
connections = [0] * count

def flood(i):
    while time.monotonic() < stop:
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                connections[i] += 1
                while time.monotonic() < stop:
                    s.sendall(chunk)
        except OSError:
            continue

threads = [threading.Thread(target=flood, args=(i,)) for i in range(count)]
for t in threads: t.start()
for t in threads: t.join()
print(sum(connections))
"""


def session_time(port: int, password: str) -> float:
    """Seconds for USER, PASS, RETR 1 and QUIT on a fresh connection."""
    start = time.perf_counter()
    client = LineClient(port, source=CLIENT_ADDRESS)
    assert client.read_line().startswith(b"+OK")
    assert client.command("USER alice") == b"+OK Send the password.\r\n"
    assert client.command(f"PASS {password}").startswith(b"+OK Logged in")
    client.send(b"RETR 1\r\n")
    assert client.read_multiline().startswith(b"+OK 20")
    assert client.command("QUIT") == b"+OK Logging out.\r\n"
    client.close()
    return time.perf_counter() - start


def median_session(port: int, password: str, seconds: float) -> tuple[float, int]:
    times = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        times.append(session_time(port, password))
    return statistics.median(times), len(times)


def test_endless_lines_are_cut_off_and_others_are_served_meanwhile(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"alice": "pw"}, f"[limits]\nmax_line_length = {MAX_LINE}\n")
    deliver(tmp_path / "mail" / "alice" / "Maildir", [b"Subject: x\r\n\r\n" + b"y" * 20_000])
    server = ServerProcess(config)
    try:
        for _ in range(20):  # warm the caches and the interpreter
            session_time(server.port, "pw")
        idle, idle_runs = median_session(server.port, "pw", 2.0)
        flood = subprocess.Popen(
            [sys.executable, "-c", FLOOD, "127.0.0.1", str(server.port), str(FLOOD_SECONDS),
             str(FLOODERS)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(0.5)  # the flood is under way
        during, during_runs = median_session(server.port, "pw", FLOOD_SECONDS - 1.5)
        out, _ = flood.communicate(timeout=FLOOD_SECONDS + 30)
        flood_connections = int(out)
    finally:
        server.stop()
    log = server.read_log()
    cut = [
        int(m.group(1))
        for m in re.finditer(r'logout reason="line too long" .* bytes_in=(\d+) ', log)
    ]
    print(
        f"idle {idle * 1000:.2f} ms ({idle_runs} runs), during the flood {during * 1000:.2f} ms"
        f" ({during_runs} runs); {flood_connections} flooding connections, {len(cut)} cut off,"
        f" at most {max(cut)} octets each"
    )
    assert flood_connections >= FLOODERS
    # Every flooding connection that the server saw through its margin was cut off there.
    assert len(cut) >= flood_connections - 2 * FLOODERS
    assert max(cut) <= MAX_LINE + ENDLESS_MARGIN + ONE_READ
    assert min(cut) > MAX_LINE + ENDLESS_MARGIN
    assert during <= 2 * idle, f"sessions took {during / idle:.1f} times as long during the flood"
