"""`workers = 2`: two processes on the same listeners, one maildrop lock across them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from bench import procstat
from pop3d.store.maildir import deliver
from tests.integration.conftest import ALICE_PASSWORD, LineClient, ServerProcess, write_config
from tests.peers import free_port


def test_two_workers_share_listeners_and_the_lock(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, {"alice": ALICE_PASSWORD, "bob": "bobpw"})
    config.write_text(
        config.read_text().replace(
            'listen = ["127.0.0.1:0"]', f'listen = ["127.0.0.1:{port}"]\nworkers = 2'
        )
    )
    deliver(tmp_path / "mail/alice/Maildir", [b"Subject: x\n\nbody\n"])
    server = ServerProcess(config)
    try:
        deadline = time.monotonic() + 10
        while len(procstat.tree(server.proc.pid)) < 3:  # the supervisor and two workers
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)
        workers = procstat.tree(server.proc.pid)[1:]
        # Many sessions: each is answered, whichever worker accepts it.
        for _ in range(20):
            client = LineClient(port)
            assert client.read_line() == b"+OK POP3 server ready.\r\n"
            client.close()
        holders, open_sessions = [], []
        for _ in range(6):  # alice's lock holds whichever worker each session lands on
            client = LineClient(port)
            open_sessions.append(client)
            client.read_line()
            client.command("USER alice")
            holders.append(client.command(f"PASS {ALICE_PASSWORD}"))
        assert holders[0].startswith(b"+OK Logged in")
        assert all(h.startswith(b"-ERR [IN-USE]") for h in holders[1:])
        # A worker that dies is replaced; the service goes on.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while (
            workers[0] in procstat.tree(server.proc.pid) or len(procstat.tree(server.proc.pid)) < 3
        ):
            assert time.monotonic() < deadline, "the dead worker was not replaced"
            time.sleep(0.05)
        client = LineClient(port)
        client.read_line()
        client.command("USER bob")
        assert client.command("PASS bobpw").startswith(b"+OK Logged in")
        client.command("QUIT")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()
