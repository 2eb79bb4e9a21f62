"""A Maildir moved from Dovecot keeps its UIDLs: the real Dovecot and pop3d, same Maildir."""

from __future__ import annotations

import os
import poplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3d.store.maildir import deliver
from pop3d.testing import ServerThread
from tests.conftest import not_here
from tests.peers.dovecot import DovecotPop3, available, give_to_nobody, shared_directory


def uidl_list(port: int) -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user("alice")
    pop.pass_("pw")
    listing = pop.uidl()[1]
    pop.retr(1)  # Dovecot moves what it reads to cur/ and flags it: pop3d must cope
    pop.quit()
    return listing


@pytest.fixture
def tmp_path() -> Iterator[Path]:  # type: ignore[override]
    reason = available()
    if reason:
        not_here(reason)
    with shared_directory() as path:
        yield path


def dovecot_served(
    root: Path, users: dict[str, str], dovecot_root: Path
) -> tuple[ServerThread, Path, DovecotPop3]:
    """A pop3d directory whose alice has five messages, and a Dovecot serving that Maildir."""
    pop3d = ServerThread.in_directory(
        root, users=users, config={"maildir": {"uidl_format": "dovecot"}}
    )
    maildir = pop3d.maildir("alice")
    for i in range(5):
        deliver(maildir, [b"Subject: %d\n\nmessage %d\n.dot line\n" % (i, i)])
    give_to_nobody(root / "mail")
    mail = str(root / "mail" / "%u" / "Maildir")
    return pop3d, maildir, DovecotPop3(dovecot_root, pop3d.config.passwd_file, mail)


def test_pop3d_serves_the_uidls_dovecot_served(tmp_path: Path) -> None:
    pop3d, maildir, dovecot = dovecot_served(
        tmp_path / "pop3d", {"alice": "pw"}, tmp_path / "dovecot"
    )
    with dovecot:
        from_dovecot = uidl_list(dovecot.port)
    assert (maildir / "dovecot-uidlist").exists()
    assert len(from_dovecot) == 5
    with pop3d:
        assert uidl_list(pop3d.port) == from_dovecot
        # New mail after the move gets pop3d's own UIDL, after the old messages.
        name = deliver(maildir, [b"Subject: new\n\nafter the move\n"])
        listing = uidl_list(pop3d.port)
        assert listing[:5] == from_dovecot
        assert listing[5] == b"6 " + name.split(",")[0].encode()


def retrieve_all(port: int, user: str = "alice", password: str = "pw") -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", port, timeout=10)
    pop.user(user)
    pop.pass_(password)
    messages = [b"\r\n".join(pop.retr(i + 1)[1]) for i in range(pop.stat()[0])]
    pop.quit()
    return messages


def test_a_maildir_dovecot_served_moves_into_postgresql_unchanged(
    tmp_path: Path, pg_dsn: str
) -> None:
    old, maildir, dovecot = dovecot_served(
        tmp_path / "old", {"alice": "pw", "bob": "bobpw"}, tmp_path / "dovecot"
    )
    with dovecot:
        dovecot_uidls = uidl_list(dovecot.port)
        dovecot_bytes = retrieve_all(dovecot.port)
    old_config = tmp_path / "old.toml"
    old_config.write_text(
        f'[auth]\npasswd_file = "{old.config.passwd_file}"\n'
        f'[maildir]\npath = "{old.config.maildir_template}"\nuidl_format = "dovecot"\n'
    )
    new_config = tmp_path / "new.toml"
    new_config.write_text(
        '[store]\nbackend = "postgresql"\n[auth]\nbackend = "postgresql"\n'
        f'[postgresql]\ndsn = "{pg_dsn}"\n'
    )

    def pop3d(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "pop3d", *args], capture_output=True,
                              text=True, timeout=120)  # fmt: skip

    assert pop3d("db", "init", "--config", str(new_config)).returncode == 0
    move = ["migrate", "--from", str(old_config), "--config", str(new_config)]
    first = pop3d(*move)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        "alice: 5 messages, 5 copied, 0 already there\nbob: 0 messages, 0 copied, 0 already there\n"
    )
    again = pop3d(*move, "--user", "alice")  # a rerun copies only what is missing
    assert again.stdout == "alice: 5 messages, 0 copied, 5 already there\n"
    checked = pop3d(*move, "--verify")
    assert (checked.returncode, checked.stdout) == (
        0, "alice: the same 5 messages\nbob: the same 0 messages\n"
    )  # fmt: skip
    assert set(os.listdir(maildir / "cur")) | set(os.listdir(maildir / "new"))  # only read
    config = {
        "store": {"backend": "postgresql"},
        "auth": {"backend": "postgresql"},
        "postgresql": {"dsn": pg_dsn},
    }
    with ServerThread.in_directory(tmp_path / "new", config=config) as new:
        assert uidl_list(new.port) == dovecot_uidls
        assert retrieve_all(new.port) == dovecot_bytes
        bob = poplib.POP3("127.0.0.1", new.port, timeout=10)  # the users came along too
        bob.user("bob")
        bob.pass_("bobpw")
        bob.quit()
