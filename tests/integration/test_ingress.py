"""Mail coming in: LMTP (RFC 2033) over real sockets, and `pop3d deliver` as a process."""

from __future__ import annotations

import os
import poplib
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3d.testing import ServerThread
from tests.integration.conftest import ALICE_PASSWORD

USERS = {
    "alice": ALICE_PASSWORD,
    "bob@example.org": "bobpw",
    # Dovecot's quota extra fields: one message of at most 1000 octets.
    "carol": "{PLAIN}c::::::userdb_quota_rule=*:storage=1000 userdb_quota_rule2=*:messages=1",
}


def lmtp_server(tmp_path: Path, **sections: dict[str, object]) -> ServerThread:
    config = {"lmtp": {"listen": ["127.0.0.1:0", str(tmp_path / "lmtp.sock")]}, **sections}
    return ServerThread.in_directory(tmp_path, users=USERS, config=config)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with lmtp_server(tmp_path, delivery={"max_message_size": 100_000}) as s:
        yield s


def files(server: ServerThread, user: str, sub: str = "new") -> list[Path]:
    directory = server.maildir(user) / sub
    return sorted(directory.iterdir()) if directory.exists() else []


def lmtp(server: ServerThread) -> smtplib.LMTP:
    client = smtplib.LMTP("127.0.0.1", server.lmtp_port, timeout=10)
    client.ehlo("test")  # smtplib.LMTP sends LHLO
    return client


MESSAGE = b"Subject: hello\r\nFrom: <s@example.net>\r\n\r\n.leading dot\r\nbody\r\n"


def test_lhlo_advertises_pipelining_and_enhanced_status_codes(server: ServerThread) -> None:
    client = lmtp(server)
    assert client.has_extn("pipelining")
    assert client.has_extn("enhancedstatuscodes")
    assert client.has_extn("size")


def test_one_reply_per_recipient_after_data(server: ServerThread) -> None:
    client = lmtp(server)
    assert client.mail("s@example.net") == (250, b"2.1.0 Sender OK")
    assert client.rcpt("alice@localhost") == (250, b"2.1.5 Recipient OK")
    assert client.rcpt("nobody@localhost") == (550, b"5.1.1 <nobody@localhost> User unknown")
    assert client.rcpt("bob+lists@example.org") == (250, b"2.1.5 Recipient OK")
    code, _ = client.docmd("DATA")
    assert code == 354
    client.send(MESSAGE.replace(b"\r\n.", b"\r\n..") + b".\r\n")
    assert client.getreply() == (250, b"2.0.0 <alice@localhost> Saved")
    assert client.getreply() == (250, b"2.0.0 <bob+lists@example.org> Saved")
    client.quit()
    (stored,) = files(server, "alice")
    assert stored.read_bytes() == (
        b"Return-Path: <s@example.net>\r\nDelivered-To: alice@localhost\r\n" + MESSAGE
    )
    size = len(stored.read_bytes())
    assert stored.name.endswith(f",S={size},W={size}")
    assert len(files(server, "bob@example.org")) == 1
    assert files(server, "alice", "tmp") == []


def test_the_unix_socket_delivers_too(server: ServerThread, tmp_path: Path) -> None:
    sock = tmp_path / "lmtp.sock"
    assert oct(sock.stat().st_mode & 0o777) == "0o666"
    client = smtplib.LMTP(str(sock), timeout=10)
    client.ehlo("test")
    refused = client.sendmail("s@x", ["alice", "bob@example.org"], MESSAGE)
    assert refused == {}
    assert len(files(server, "alice")) == 1


def test_a_message_over_the_size_limit_is_refused_for_each_recipient(server: ServerThread) -> None:
    client = lmtp(server)
    client.mail("s@x")
    client.rcpt("alice")
    client.rcpt("bob@example.org")
    client.docmd("DATA")
    client.send(b"Subject: big\r\n\r\n" + (b"y" * 500 + b"\r\n") * 300 + b".\r\n")
    first, second = client.getreply(), client.getreply()
    assert first[0] == second[0] == 552
    assert first[1].startswith(b"5.3.4 <alice>")
    assert second[1].startswith(b"5.3.4 <bob@example.org>")
    assert client.noop()[0] == 250  # the session goes on
    assert files(server, "alice") == []
    assert files(server, "alice", "tmp") == []


def test_size_declared_in_mail_from_is_checked(server: ServerThread) -> None:
    client = lmtp(server)
    code, _ = client.docmd("MAIL FROM:<s@x> SIZE=200000")
    assert code == 552


def test_quota(server: ServerThread) -> None:
    client = lmtp(server)
    assert client.sendmail("s@x", ["carol"], MESSAGE) == {}
    # Now carol holds one message of her one-message quota: refused at RCPT, permanently.
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        client.sendmail("s@x", ["carol"], MESSAGE)
    assert refused.value.recipients["carol"] == (552, b"5.2.2 <carol> Mailbox is full")


def test_quota_by_size_is_checked_at_data(tmp_path: Path) -> None:
    with lmtp_server(tmp_path, delivery={"quota_full_tempfail": True}) as server:
        client = lmtp(server)
        client.mail("s@x")
        client.rcpt("carol")
        client.rcpt("alice")
        client.docmd("DATA")
        client.send(b"Subject: 2k\r\n\r\n" + b"z" * 2000 + b"\r\n.\r\n")
        assert client.getreply() == (452, b"4.2.2 <carol> Mailbox is full, try again later")
        assert client.getreply() == (250, b"2.0.0 <alice> Saved")
        assert files(server, "carol") == []
        assert files(server, "carol", "tmp") == []


def test_a_storage_failure_is_temporary_and_leaves_nothing(server: ServerThread) -> None:
    maildir = server.maildir("alice")
    maildir.mkdir(parents=True)
    (maildir / "new").write_text("not a directory")  # what a broken disk looks like to us
    client = lmtp(server)
    client.mail("s@x")
    client.rcpt("alice")
    client.rcpt("bob@example.org")
    client.docmd("DATA")
    client.send(MESSAGE + b".\r\n")
    assert client.getreply() == (451, b"4.3.0 <alice> Temporary failure, try again later")
    assert client.getreply() == (250, b"2.0.0 <bob@example.org> Saved")
    assert list((maildir / "tmp").iterdir()) == []


def test_delivered_mail_is_served_over_pop3(server: ServerThread) -> None:
    lmtp(server).sendmail("s@x", ["alice"], MESSAGE)
    pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
    pop.user("alice")
    pop.pass_(ALICE_PASSWORD)
    lines = pop.retr(1)[1]
    assert lines[2:] == MESSAGE.rstrip(b"\r\n").split(b"\r\n")
    pop.quit()


# ---- pop3d deliver ------------------------------------------------------------------------


def deliver(
    server: ServerThread, user: str, data: bytes, config: Path
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pop3d", "deliver", "--config", str(config), user],
        input=data,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def config_file(server: ServerThread, tmp_path: Path) -> Path:
    path = tmp_path / "pop3d.toml"
    path.write_text(
        f'[auth]\npasswd_file = "{server.config.passwd_file}"\n'
        f'[maildir]\npath = "{server.config.maildir_template}"\n'
        "[delivery]\nmax_message_size = 100000\n"
    )
    return path


def test_deliver_exit_codes(server: ServerThread, config_file: Path) -> None:
    ok = deliver(server, "alice", MESSAGE, config_file)
    assert (ok.returncode, ok.stderr) == (0, b"")
    assert files(server, "alice")[0].read_bytes() == MESSAGE  # an LDA adds no header itself
    unknown = deliver(server, "nobody", MESSAGE, config_file)
    assert unknown.returncode == 67
    assert b"550 5.1.1" in unknown.stderr
    too_big = deliver(server, "alice", b"x" * 200_000, config_file)
    assert too_big.returncode == 73
    assert deliver(server, "carol", MESSAGE, config_file).returncode == 0
    full = deliver(server, "carol", MESSAGE, config_file)
    assert full.returncode == 73
    assert b"5.2.2" in full.stderr
    assert files(server, "alice", "tmp") == files(server, "carol", "tmp") == []


def test_deliver_tempfails_when_it_cannot_work(
    server: ServerThread, config_file: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text(config_file.read_text().replace("users.passwd", "missing.passwd"))
    assert deliver(server, "alice", MESSAGE, broken).returncode == 75
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[auth]\nnot_a_key = 1\n")
    assert deliver(server, "alice", MESSAGE, bad_config).returncode == 75


def test_deliver_streams_a_large_message(server: ServerThread, tmp_path: Path) -> None:
    config = tmp_path / "big.toml"
    config.write_text(
        f'[auth]\npasswd_file = "{server.config.passwd_file}"\n'
        f'[maildir]\npath = "{server.config.maildir_template}"\n'
    )
    body = b"Subject: big\n\n" + (b"0123456789" * 10 + b"\n") * 200_000  # 20 MB
    assert deliver(server, "alice", body, config).returncode == 0
    (stored,) = files(server, "alice")
    assert stored.stat().st_size == len(body)
    wire = len(body) + body.count(b"\n")
    assert stored.name.endswith(f",S={len(body)},W={wire}")


# ---- pop3d user / mailbox / check-config --------------------------------------------------


def pop3d(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pop3d", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_user_admin_commands(server: ServerThread, config_file: Path) -> None:
    cfg = ["--config", str(config_file)]
    added = pop3d("user", "add", *cfg, "dave@example.org", "--password-stdin", stdin=b"dave pw\n")
    assert added.returncode == 0, added.stderr
    assert server.maildir("dave@example.org").is_dir()
    passwd = server.config.passwd_file.read_text()
    assert "dave@example.org:{ARGON2ID}$argon2id$" in passwd
    assert "dave pw" not in passwd
    again = pop3d("user", "add", *cfg, "dave@example.org", "--password-stdin", stdin=b"x\n")
    assert (again.returncode, again.stderr) == (1, "pop3d: user dave@example.org already exists\n")
    assert (
        pop3d(
            "user", "passwd", *cfg, "dave@example.org", "--password-stdin", stdin=b"new\n"
        ).returncode
        == 0
    )
    listing = pop3d("user", "list", *cfg).stdout.split()
    assert listing == ["alice", "bob@example.org", "carol", "dave@example.org"]
    assert pop3d("user", "delete", *cfg, "bob@example.org").returncode == 0
    assert "bob@example.org" not in pop3d("user", "list", *cfg).stdout
    assert pop3d("user", "delete", *cfg, "nobody").stderr == "pop3d: no user nobody\n"
    bad = pop3d("user", "add", *cfg, "../evil", "--password-stdin", stdin=b"x\n")
    assert bad.returncode == 1
    assert "cannot be a user name" in bad.stderr
    no_tty = pop3d("user", "add", *cfg, "erin")
    assert "use --password-stdin" in no_tty.stderr
    # The running server picks the change up at once: dave logs in with his new password.
    pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
    pop.user("dave@example.org")
    pop.pass_("new")
    pop.quit()


def logs_in(server: ServerThread, user: str, password: str) -> None:
    """Within the second a running server takes to see a changed passwd-file."""
    deadline = time.monotonic() + 3
    while True:
        pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
        pop.user(user)
        try:
            pop.pass_(password)
        except poplib.error_proto:
            if time.monotonic() > deadline:
                raise
            pop.close()
            time.sleep(0.2)
            continue
        pop.quit()
        return


@pytest.mark.parametrize("scheme", ["ARGON2ID", "SCRAM-SHA-256", "SHA512-CRYPT", "BLF-CRYPT"])
def test_user_add_and_passwd_with_each_scheme(
    server: ServerThread, config_file: Path, scheme: str
) -> None:
    cfg = ["--config", str(config_file)]
    added = pop3d("user", "add", *cfg, "erin", "--scheme", scheme, "--password-stdin", stdin=b"e\n")
    assert added.returncode == 0, added.stderr
    assert "erin:{" + scheme + "}" in server.config.passwd_file.read_text()
    logs_in(server, "erin", "e")
    changed = pop3d(
        "user", "passwd", *cfg, "alice", "--scheme", scheme, "--password-stdin", stdin=b"a2\n"
    )
    assert changed.returncode == 0, changed.stderr
    assert "alice:{" + scheme + "}" in server.config.passwd_file.read_text()
    logs_in(server, "alice", "a2")
    # check-config says which allowed mechanism the users' passwords leave out, and why.
    report = pop3d("check-config", *cfg).stdout
    if scheme == "SCRAM-SHA-256":
        assert "SASL mechanisms offered: PLAIN LOGIN SCRAM-SHA-256\n" in report
        assert "warning: [auth] mechanisms" not in report
    else:
        assert "SASL mechanisms offered: PLAIN LOGIN\n" in report
        assert (
            "warning: [auth] mechanisms allows SCRAM-SHA-256, which is not offered: "
            f"2 users have a password it cannot use ({{{scheme}}} 2)\n"
        ) in report


def test_the_default_scheme_comes_from_the_config(server: ServerThread, tmp_path: Path) -> None:
    config = tmp_path / "scram.toml"
    config.write_text(
        f'[auth]\npasswd_file = "{server.config.passwd_file}"\npassword_scheme = "SCRAM-SHA-256"\n'
        f'[maildir]\npath = "{server.config.maildir_template}"\n'
    )
    added = pop3d("user", "add", "--config", str(config), "erin", "--password-stdin", stdin=b"e\n")
    assert added.returncode == 0, added.stderr
    assert "erin:{SCRAM-SHA-256}4096," in server.config.passwd_file.read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "pop3d", "user", "passwd", "--config", str(config), "erin",
         "--password-stdin"],
        input=b"\xff\xfe\n", capture_output=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1
    assert b"SCRAM-SHA-256 cannot store this password" in bad.stderr


def test_two_admins_at_once_lose_nothing(server: ServerThread, config_file: Path) -> None:
    def add(i: int) -> None:
        result = pop3d(
            "user",
            "add",
            "--config",
            str(config_file),
            f"user{i}",
            "--password-stdin",
            stdin=b"pw\n",
        )
        assert result.returncode == 0, result.stderr

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    listing = pop3d("user", "list", "--config", str(config_file)).stdout.split()
    assert {f"user{i}" for i in range(8)} <= set(listing)
    assert "alice" in listing


def test_mailbox_stats(server: ServerThread, config_file: Path) -> None:
    server.deliver("alice", b"a\n")
    server.deliver("alice", b"bb\n")
    out = pop3d("mailbox", "stats", "--config", str(config_file), "alice")
    assert out.returncode == 0
    lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
    assert (lines["messages"], lines["octets"]) == ("2", "7")
    assert lines["oldest"].endswith(" UTC")
    assert pop3d("mailbox", "stats", "--config", str(config_file), "nobody").returncode == 67


def test_check_config(server: ServerThread, config_file: Path, tmp_path: Path) -> None:
    good = pop3d("check-config", "--config", str(config_file))
    assert good.returncode == 0
    assert "4 users" not in good.stdout
    assert "3 users" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[auth]\npasswd_file = "u"\n[maildir]\npath = "/x/{usr}"\n')
    result = pop3d("check-config", "--config", str(bad))
    assert result.returncode == 78
    assert "unknown placeholder {usr}" in result.stderr
    missing = tmp_path / "missing.toml"
    missing.write_text(config_file.read_text().replace("users.passwd", "gone.passwd"))
    assert pop3d("check-config", "--config", str(missing)).returncode == 78


@pytest.mark.parametrize(
    "command",
    [["serve"], ["deliver"], ["user", "add"], ["mailbox", "stats"], ["check-config"], ["user"]],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = pop3d(*command, "--help")
    assert result.returncode == 0
    assert "usage: pop3d" in result.stdout


def test_lmtp_needs_os_sockets_cleaned(tmp_path: Path) -> None:
    # A stale socket file from a crash does not stop the next start.
    (tmp_path / "lmtp.sock").write_text("stale")
    with lmtp_server(tmp_path) as server:
        assert os.path.exists(tmp_path / "lmtp.sock")
        assert lmtp(server).noop()[0] == 250


def test_a_null_sender_is_an_empty_return_path(server: ServerThread) -> None:
    client = lmtp(server)
    assert client.sendmail("<>", ["alice"], MESSAGE) == {}
    assert files(server, "alice")[0].read_bytes().startswith(b"Return-Path: <>\r\n")


def test_the_lmtp_greeting_names_no_software(server: ServerThread) -> None:
    client = smtplib.LMTP()
    code, banner = client.connect("127.0.0.1", server.lmtp_port)
    assert code == 220
    assert b"Python" not in banner
    assert b"SMTP" not in banner


def test_deliver_drops_the_mbox_from_line(server: ServerThread, config_file: Path) -> None:
    piped = b"From carol@sender.test  Tue Dec  1 11:35:03 2026\n" + MESSAGE
    assert deliver(server, "alice", piped, config_file).returncode == 0
    assert files(server, "alice")[0].read_bytes() == MESSAGE
    # A message that merely starts with another header keeps every byte.
    assert deliver(server, "bob@example.org", b"Fromage: yes\n\nx\n", config_file).returncode == 0
    assert files(server, "bob@example.org")[0].read_bytes() == b"Fromage: yes\n\nx\n"
