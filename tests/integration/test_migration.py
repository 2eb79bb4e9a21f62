"""A Maildir moved from Dovecot keeps its UIDLs: the real Dovecot and pop3d, same Maildir."""

from __future__ import annotations

import poplib
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


def test_pop3d_serves_the_uidls_dovecot_served(tmp_path: Path) -> None:
    pop3d = ServerThread.in_directory(
        tmp_path / "pop3d", users={"alice": "pw"}, config={"maildir": {"uidl_format": "dovecot"}}
    )
    maildir = pop3d.maildir("alice")
    for i in range(5):
        deliver(maildir, [b"Subject: %d\n\nmessage %d\n" % (i, i)])
    give_to_nobody(tmp_path / "pop3d" / "mail")
    mail = str(tmp_path / "pop3d" / "mail" / "%u" / "Maildir")
    with DovecotPop3(tmp_path / "dovecot", pop3d.config.passwd_file, mail) as dovecot:
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
