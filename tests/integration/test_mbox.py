"""pop3d serving /var/mail-style mboxes: the how-to's session, and `pop3d deliver` (what an
MTA's local agent does) appending while a session is open."""

from __future__ import annotations

import os
import poplib
import subprocess
import sys
from pathlib import Path

from pop3d.testing import ServerThread
from tests.integration.conftest import LineClient
from tests.integration.test_howto import USER, replay_howto
from tests.transcript import TRANSCRIPTS

MBOX = {"store": {"backend": "mbox"}, "mbox": {"path": "mail/{user}"}}


def mbox_server(root: Path, users: dict[str, str]) -> ServerThread:
    (root / "mail").mkdir(parents=True)
    return ServerThread.in_directory(root, users=users, config=MBOX)


def test_the_howto_session_on_an_mbox(tmp_path: Path) -> None:
    with mbox_server(tmp_path, {USER: "testpass"}) as server:
        for n in (1, 2):
            server.deliver(USER, (TRANSCRIPTS / "howto" / f"{n}.eml").read_bytes())
        replay_howto(server.port)
    assert (tmp_path / "mail" / USER).read_bytes() == b""  # both deleted at QUIT


def test_mail_delivered_during_a_session_survives_its_update(tmp_path: Path) -> None:
    with mbox_server(tmp_path, {"alice": "pw"}) as server:
        for i in range(3):
            server.deliver("alice", b"Subject: %d\n\nFrom the body %d\n" % (i, i))
        mbox = tmp_path / "mail" / "alice"
        os.chmod(mbox, 0o660)
        pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
        pop.user("alice")
        pop.pass_("pw")
        assert pop.stat()[0] == 3
        assert pop.retr(2)[1] == [b"Subject: 1", b"", b"From the body 1"]
        config = tmp_path / "pop3d.toml"
        config.write_text(
            f'[auth]\npasswd_file = "{tmp_path / "users.passwd"}"\n[store]\nbackend = "mbox"\n'
            f'[mbox]\npath = "{tmp_path / "mail" / "{user}"}"\n'
        )
        delivered = subprocess.run(
            [sys.executable, "-m", "pop3d", "deliver", "--config", str(config), "alice"],
            input=b"Subject: late\n\nFrom a line start\n", capture_output=True, timeout=60,
        )
        assert delivered.returncode == 0, delivered.stderr
        pop.dele(1)
        pop.dele(3)
        assert pop.quit().startswith(b"+OK")
        pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
        pop.user("alice")
        pop.pass_("pw")
        assert [pop.retr(i)[1][0] for i in (1, 2)] == [b"Subject: 1", b"Subject: late"]
        assert pop.retr(2)[1][-1] == b"From a line start"
        pop.quit()
    assert mbox.stat().st_mode & 0o777 == 0o660
    assert b"\n>From a line start\n" in mbox.read_bytes()  # quoted on disk, not on the wire


def test_a_file_that_is_no_mbox_is_refused_and_left_alone(tmp_path: Path) -> None:
    with mbox_server(tmp_path, {"alice": "pw"}) as server:
        mbox = tmp_path / "mail" / "alice"
        mbox.write_bytes(b"Subject: no From line\n\nbody\n")
        client = LineClient(server.port)
        client.read_line()
        client.command("USER alice")
        assert client.command("PASS pw").startswith(b"-ERR [SYS/PERM]")
        assert client.command("NOOP").startswith(b"-ERR")  # still there, not logged in
    assert mbox.read_bytes() == b"Subject: no From line\n\nbody\n"
