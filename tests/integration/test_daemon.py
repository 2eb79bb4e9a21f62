"""`pop3d serve` as root, as a daemon does it: listeners first, then never root again.

CI runs as root, so these tests start pop3d as root for real and look at what the kernel
says of each of its processes (/proc/PID/status); without root they cannot run.
"""

from __future__ import annotations

import grp
import os
import poplib
import pwd
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pop3d.store.maildir import deliver
from tests.conftest import hand_over, not_here, service_account
from tests.integration.conftest import (
    ALICE_PASSWORD,
    ServerProcess,
    make_tls_files,
    write_config,
)

MESSAGE = b"Subject: hello\r\n\r\nbody\r\n"


def root_account() -> pwd.struct_passwd:
    account = service_account()
    if account is None:
        not_here("needs root: pop3d gives up root only when it has it")
    return pwd.getpwnam(account)


def free_low_port() -> int:
    """A port below 1024 on 127.0.0.1 that nothing uses (only root may bind it)."""
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 1024")


def status(pid: int) -> dict[str, list[str]]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.split() for k, _, v in (line.partition(":") for line in lines)}


def served_certificate(port: int) -> bytes:
    """The certificate the implicit-TLS port serves now."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def pem_to_der(path: Path) -> bytes:
    text = path.read_text()
    leaf = text[: text.index("-----END CERTIFICATE-----")] + "-----END CERTIFICATE-----\n"
    return ssl.PEM_cert_to_DER_cert(leaf)


def test_binds_below_1024_as_root_then_every_process_is_the_account(tmp_path: Path) -> None:
    account = root_account()
    port = free_low_port()
    served = tmp_path / "srv"
    served.mkdir()
    # The first key only root may read: pop3d reads it before it gives up root.
    private = tmp_path / "root-only"
    first = make_tls_files(private)
    private.chmod(0o700)
    lmtp_socket = served / "lmtp.sock"
    config = write_config(
        served,
        {"alice": ALICE_PASSWORD},
        f'[tls]\ncert = "{first.cert}"\nkey = "{first.key}"\n'
        f'[lmtp]\nlisten = ["127.0.0.1:0", "{lmtp_socket}"]\nsocket_mode = 0o660\n',
        server='listen_tls = ["127.0.0.1:0"]\nworkers = 2\n',
    )
    config.write_text(
        config.read_text().replace('"127.0.0.1:0"]\nshutdown', f'"127.0.0.1:{port}"]\nshutdown', 1)
    )
    deliver(served / "mail/alice/Maildir", [MESSAGE])
    server = ServerProcess(config)
    try:
        assert server.port == port
        assert len(server.workers) == 2
        groups = sorted(str(g) for g in os.getgrouplist(account.pw_name, account.pw_gid))
        for pid in [server.proc.pid, *server.workers]:
            st = status(pid)
            assert st["Uid"] == [str(account.pw_uid)] * 4, pid
            assert st["Gid"] == [str(account.pw_gid)] * 4, pid
            assert sorted(st["Groups"]) == groups, pid
            assert st["CapEff"] == ["0000000000000000"], pid
            assert st["CapPrm"] == ["0000000000000000"], pid
        assert f"serving as {account.pw_name}:" in "".join(server.log)
        # A whole session on the port below 1024.
        pop = poplib.POP3("127.0.0.1", port, timeout=10)
        pop.user("alice")
        pop.pass_(ALICE_PASSWORD)
        assert pop.stat() == (1, len(MESSAGE))
        assert pop.retr(1)[1] == [b"Subject: hello", b"", b"body"]
        pop.dele(1)
        pop.quit()
        assert os.listdir(served / "mail/alice/Maildir/new") == []
        # LMTP: what the worker writes is the account's.
        lmtp = smtplib.LMTP("127.0.0.1", server.ports["LMTP"], timeout=10)
        lmtp.sendmail("s@example.net", ["alice"], MESSAGE)
        lmtp.quit()
        (delivered,) = (served / "mail/alice/Maildir/new").iterdir()
        assert (delivered.stat().st_uid, delivered.stat().st_gid) == (
            account.pw_uid, account.pw_gid
        )  # fmt: skip
        sock = lmtp_socket.stat()
        assert (sock.st_mode & 0o777, sock.st_uid) == (0o660, account.pw_uid)
        unix = smtplib.LMTP(str(lmtp_socket), timeout=10)
        assert unix.sendmail("s@example.net", ["alice"], MESSAGE) == {}
        unix.quit()
        assert served_certificate(server.tls_port) == pem_to_der(first.cert)
        # SIGHUP reads the certificate again, as the account: one only root can read is
        # refused (and logged), and the running one stays; one it can read is served.
        server.proc.send_signal(signal.SIGHUP)
        wait_for_log(server, "reload failed, keeping the running configuration", count=2)
        assert served_certificate(server.tls_port) == pem_to_der(first.cert)
        second = make_tls_files(served / "tls2")
        hand_over(served, account.pw_name)
        config.write_text(
            config.read_text()
            .replace(str(first.cert), str(second.cert))
            .replace(str(first.key), str(second.key))
        )
        server.proc.send_signal(signal.SIGHUP)
        wait_for_log(server, "configuration reloaded", count=2)
        for _ in range(4):  # whichever worker takes the connection
            assert served_certificate(server.tls_port) == pem_to_der(second.cert)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.stop()


def wait_for_log(server: ServerProcess, text: str, count: int = 1, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while "".join(server.log).count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} times: {server.log}"
        time.sleep(0.05)


def serve(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pop3d", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    """Exit 78 with a one-line error naming the key, and nothing served."""
    assert result.returncode == 78, result
    errors = [line for line in result.stderr.splitlines() if line.startswith("pop3d: ")]
    assert len(errors) == 1, result.stderr
    assert message in errors[0], errors[0]
    assert not re.search(r"pop3d \S+ ready", result.stderr)


def test_root_with_a_config_and_no_user_refuses_to_start(tmp_path: Path) -> None:
    root_account()
    config = write_config(tmp_path, {"alice": "pw"})
    config.write_text(re.sub(r'user = ".*"\n', "", config.read_text()))
    refused(serve(config), "[server] user must name the account to serve as")


@pytest.mark.parametrize(
    ("server", "extra", "message"),
    [
        ('user = "nobody-here"\n', "", "[server] user: no account 'nobody-here'"),
        ('group = "no-such-group"\n', "", "[server] group: no group 'no-such-group'"),
        ('control_socket = "/nonexistent/dir/control.sock"\n', "", "[server] control_socket:"),
        ("", '[lmtp]\nlisten = ["./lmtp.sock"]\nsocket_user = "nobody-here"\n',
         "[lmtp] socket_user: no account 'nobody-here'"),
    ],
)  # fmt: skip
def test_bad_accounts_and_paths_are_refused_before_serving(
    tmp_path: Path, server: str, extra: str, message: str
) -> None:
    root_account()
    config = write_config(tmp_path, {"alice": "pw"}, extra)
    if server.startswith("user"):
        config.write_text(re.sub(r'user = ".*"\n', server, config.read_text()))
    else:
        config.write_text(config.read_text().replace("[auth]", server + "[auth]"))
    refused(serve(config), message)


def test_a_metrics_port_in_use_is_refused(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path, {"alice": "pw"}, f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        )
        refused(serve(config), "[metrics] listen:")


def test_root_may_try_the_embedded_default_with_a_warning(tmp_path: Path) -> None:
    root_account()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pop3d", "serve", "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "ready" in line or len(lines) > 40:
                break
        assert any("serving as root: the embedded default is for trying" in ln for ln in lines)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_admin_commands_as_root_leave_what_they_make_to_the_account(tmp_path: Path) -> None:
    account = root_account()
    config = write_config(tmp_path, {"alice": "pw"})
    hand_over(tmp_path, account.pw_name)  # as a server's directory would be
    passwd = tmp_path / "users.passwd"
    group = grp.getgrgid(account.pw_gid)
    os.chown(passwd, 0, account.pw_gid)
    passwd.chmod(0o640)
    cfg = ["--config", str(config)]

    def pop3d(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "pop3d", *args], input=stdin,
                              capture_output=True, timeout=60)  # fmt: skip

    added = pop3d("user", "add", *cfg, "carol", "--password-stdin", stdin=b"pw\n")
    assert added.returncode == 0, added.stderr
    st = passwd.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, group.gr_gid, 0o640)
    maildir = tmp_path / "mail/carol/Maildir"
    for path in (tmp_path / "mail", tmp_path / "mail/carol", maildir, maildir / "new"):
        assert path.stat().st_uid == account.pw_uid, path
    assert (
        pop3d("user", "passwd", *cfg, "carol", "--password-stdin", stdin=b"new\n").returncode == 0
    )
    assert pop3d("user", "delete", *cfg, "alice").returncode == 0
    st = passwd.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, group.gr_gid, 0o640)
    delivered = pop3d("deliver", *cfg, "carol", stdin=MESSAGE)
    assert delivered.returncode == 0, delivered.stderr
    (message,) = (maildir / "new").iterdir()
    assert message.stat().st_uid == account.pw_uid
    # A passwd-file that does not exist yet is made readable by the account's group only.
    passwd.unlink()
    assert pop3d("user", "add", *cfg, "dave", "--password-stdin", stdin=b"pw\n").returncode == 0
    st = passwd.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, group.gr_gid, 0o640)


def test_check_config_reports_on_the_account_and_what_it_must_read(tmp_path: Path) -> None:
    account = root_account()
    tls = make_tls_files(tmp_path / "tls")
    tls.key.chmod(0o600)  # root's, as certbot leaves it
    config = write_config(
        tmp_path, {"alice": "pw"}, f'[tls]\ncert = "{tls.cert}"\nkey = "{tls.key}"\n',
        server='control_socket = "run/control.sock"\n',
    )  # fmt: skip
    check = ["check-config", "--config", str(config)]

    def pop3d(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pop3d", *args], capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    missing = pop3d(*check)
    assert missing.returncode == 78
    assert f"error: [server] control_socket: no directory {tmp_path / 'run'}" in missing.stderr
    (tmp_path / "run").mkdir()
    result = pop3d(*check)
    assert result.returncode == 0, result.stderr
    assert f"serves as {account.pw_name}:" in result.stdout
    assert (
        f"warning: [tls] key {tls.key} cannot be read by {account.pw_name} at SIGHUP"
        in result.stdout
    )
    assert "[tls] cert" not in result.stdout  # that one is readable by all
    config.write_text(re.sub(r'user = ".*"', 'user = "nobody-here"', config.read_text()))
    unknown = pop3d(*check)
    assert unknown.returncode == 78
    assert "error: [server] user: no account 'nobody-here'" in unknown.stderr
