"""Prometheus metrics: exact counts after known sessions, whichever worker served them;
`promtool check metrics` finds nothing; a real Prometheus scrapes the endpoint."""

from __future__ import annotations

import json
import re
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pop3d import __version__
from pop3d.store.maildir import deliver
from tests.conftest import require_program
from tests.integration.conftest import ROOT, ServerProcess, make_tls_files, write_config
from tests.peers import free_port

MESSAGE = b"Subject: m\r\n\r\nbody\r\n"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


class Counted:
    """A raw POP3 connection that counts every octet the server sends it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.received = 0
        self.buf = b""
        self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, self.buf
            self.received += len(chunk)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def command(self, text: str) -> bytes:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.line()

    def until_closed(self) -> None:
        while chunk := self.sock.recv(65536):
            self.received += len(chunk)
        self.sock.close()


def metrics_server(tmp_path: Path, workers: int) -> tuple[ServerProcess, int]:
    port = free_port()
    tls = make_tls_files(tmp_path / "tls")
    config = write_config(
        tmp_path, {"alice": "pw", "bob": "pw2"},
        f'[tls]\ncert = "{tls.cert}"\nkey = "{tls.key}"\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n[lmtp]\nlisten = ["127.0.0.1:0"]\n',
        server=f'listen_tls = ["127.0.0.1:0"]\nworkers = {workers}\n',
    )  # fmt: skip
    deliver(tmp_path / "mail/alice/Maildir", [MESSAGE])
    return ServerProcess(config), port


@pytest.mark.parametrize("workers", [1, 2])
def test_the_scrape_counts_exactly(tmp_path: Path, workers: int) -> None:
    server, port = metrics_server(tmp_path, workers)
    try:
        before = samples(scrape(port))
        assert value(before, "pop3d_build_info", version=__version__) == 1
        assert value(before, "pop3d_logins_total", result="success", mechanism="USER") == 0
        # One good login with a RETR, a second session refused [IN-USE] meanwhile, one
        # failed login, and idle connections: with two workers, they land on either.
        good = Counted(server.port)
        good.command("USER alice")
        assert good.command("PASS pw").startswith(b"+OK Logged in")
        in_use = Counted(server.port)
        in_use.command("USER alice")
        assert in_use.command("PASS pw").startswith(b"-ERR [IN-USE]")
        assert in_use.command("QUIT") == b"+OK Bye."
        in_use.until_closed()
        assert good.command("RETR 1").startswith(b"+OK")
        while good.line() != b".":
            pass
        assert good.command("QUIT").startswith(b"+OK")
        good.until_closed()
        bad = Counted(server.port)
        bad.command("USER bob")
        assert bad.command("PASS wrong") == b"-ERR [AUTH] Authentication failed."
        assert bad.command("QUIT") == b"+OK Bye."
        bad.until_closed()
        idle = [Counted(server.port) for _ in range(3)]
        for conn in idle:
            conn.sock.close()
        with socket.create_connection(("127.0.0.1", server.tls_port), timeout=10) as not_tls:
            not_tls.sendall(b"USER alice\r\n")  # a handshake that fails
            not_tls.recv(100)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        lmtp = smtplib.LMTP("127.0.0.1", server.ports["LMTP"], timeout=10)
        lmtp.sendmail("s@example.net", ["bob"], MESSAGE)
        lmtp.quit()
        sent = good.received + in_use.received + bad.received + sum(c.received for c in idle)
        deadline = time.monotonic() + 10
        while True:  # the last closes are counted as the server sees them
            got = samples(scrape(port))
            settled = (
                value(got, "pop3d_connections_open") == 0
                and value(got, "pop3d_sessions_closed_total", reason="connection closed by client")
                >= 3
                and value(got, "pop3d_penalized_addresses") > 0  # measured once a second
            )
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        server.stop()
    listener = {"listener": f"127.0.0.1:{server.port}", "tls": "false"}
    assert value(got, "pop3d_connections_total", **listener) == 6
    assert value(got, "pop3d_connections_open") == 0
    assert value(got, "pop3d_sessions_logged_in") == 0
    assert value(got, "pop3d_logins_total", result="success", mechanism="USER") == 2
    assert value(got, "pop3d_logins_total", result="failure", mechanism="USER") == 1
    assert value(got, "pop3d_login_duration_seconds_count") == 3
    assert 0 < value(got, "pop3d_login_duration_seconds_sum") < 3
    assert value(got, "pop3d_maildrop_in_use_total") == 1
    assert value(got, "pop3d_messages_retrieved_total") == 1
    assert value(got, "pop3d_messages_deleted_total") == 0
    assert value(got, "pop3d_bytes_sent_total") == sent
    assert value(got, "pop3d_sessions_closed_total", reason="quit") == 3
    assert value(got, "pop3d_sessions_closed_total", reason="connection closed by client") == 3
    assert value(got, "pop3d_penalized_addresses") == 1
    assert value(got, "pop3d_tls_handshake_failures_total") == 1
    assert value(got, "pop3d_lmtp_deliveries_total", result="delivered") == 1
    assert not any("alice" in str(key) or ("127.0.0.1:" in str(key[1]) and key[0] !=
                   "pop3d_connections_total") for key in got)  # fmt: skip


def test_promtool_finds_nothing_and_prometheus_scrapes_it(tmp_path: Path) -> None:
    promtool = require_program("promtool")
    prometheus = require_program("prometheus")
    server, port = metrics_server(tmp_path / "srv", 2)
    prometheus_port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: pop3d\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("w")
    prom = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        bad = Counted(server.port)
        bad.command("USER alice")
        bad.command("PASS wrong")
        text = scrape(port)
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked
        assert checked.stdout == checked.stderr == ""
        query = (f"http://127.0.0.1:{prometheus_port}/api/v1/query?query="
                 "pop3d_logins_total%7Bresult%3D%22failure%22%7D")  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(query, timeout=5) as response:
                    answer = json.load(response)
            except OSError:
                answer = {}
            results = answer.get("data", {}).get("result", [])
            if results or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answer.get("status") == "success", (tmp_path / "prometheus.log").read_text()
        (result,) = results
        assert result["metric"]["__name__"] == "pop3d_logins_total"
        assert result["metric"]["mechanism"] == "USER"
        assert result["metric"]["job"] == "pop3d"
        assert float(result["value"][1]) == 1
    finally:
        prom.terminate()
        prom.wait(timeout=30)
        log.close()
        server.stop()


def test_the_grafana_dashboard_shows_every_series() -> None:
    from pop3d.server.metrics import Metrics  # noqa: PLC0415

    dashboard = json.loads((ROOT / "contrib/grafana/pop3d.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    names = {m.name for m in Metrics().registry.collect()}
    assert names == {
        "pop3d_connections", "pop3d_connections_open", "pop3d_sessions_logged_in",
        "pop3d_logins", "pop3d_login_duration_seconds", "pop3d_sessions_closed",
        "pop3d_messages_retrieved", "pop3d_messages_deleted", "pop3d_bytes_sent",
        "pop3d_maildrop_in_use", "pop3d_penalized_addresses", "pop3d_lmtp_deliveries",
        "pop3d_tls_handshake_failures", "pop3d_build_info",
    }  # fmt: skip
    for name in names:
        assert re.search(rf"\b{name}(_total|_bucket)?\b", exprs), name
