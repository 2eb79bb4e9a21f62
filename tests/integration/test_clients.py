"""Real POP3 clients against a live server: Python's poplib, curl, fetchmail."""

from __future__ import annotations

import os
import poplib
import subprocess
from pathlib import Path

import pytest

from pop3d.testing import ServerThread
from tests.conftest import require_program
from tests.integration.conftest import ALICE_PASSWORD, message_files

MESSAGES = [
    b"Subject: one\n\nhello\n",
    b"Subject: dots\r\n\r\n.starts with a dot\r\n.\r\n..two dots\r\n",
    b"Subject: no final newline\n\nlast line",
]


def expected_lines(message: bytes) -> list[bytes]:
    """What poplib hands back: lines without line ends, dots unstuffed."""
    return message.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")


def fill(server: ServerThread) -> None:
    for m in MESSAGES:
        server.deliver("alice", m)


def test_poplib_full_session(server: ServerThread) -> None:
    fill(server)
    pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
    assert pop.getwelcome() == b"+OK POP3 server ready."
    caps = pop.capa()
    assert {"TOP", "UIDL", "USER", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"} <= caps.keys()
    pop.user("alice")
    pop.pass_(ALICE_PASSWORD)
    count, octets = pop.stat()
    sizes = [len(m) + m.count(b"\n") - m.count(b"\r\n") for m in MESSAGES]
    sizes[2] += 2  # the CRLF that ends the last line
    assert (count, octets) == (3, sum(sizes))
    _, listing, _ = pop.list()
    assert listing == [f"{i} {s}".encode() for i, s in enumerate(sizes, 1)]
    uidls = pop.uidl()[1]
    assert len({u.split()[1] for u in uidls}) == 3
    for i, m in enumerate(MESSAGES, 1):
        _, lines, _size = pop.retr(i)
        assert lines == expected_lines(m)
    _, top, _ = pop.top(2, 1)
    assert top == [b"Subject: dots", b"", b".starts with a dot"]
    pop.dele(1)
    assert pop.stat() == (2, sum(sizes[1:]))
    with pytest.raises(poplib.error_proto, match="deleted"):
        pop.retr(1)
    pop.rset()
    pop.dele(2)
    pop.quit()
    assert len(message_files(server, "alice")) == 2


def test_poplib_wrong_password(server: ServerThread) -> None:
    pop = poplib.POP3("127.0.0.1", server.port, timeout=10)
    pop.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.pass_("wrong")
    pop.quit()


def test_poplib_second_session_is_refused_in_use(server: ServerThread) -> None:
    first = poplib.POP3("127.0.0.1", server.port, timeout=10)
    first.user("alice")
    first.pass_(ALICE_PASSWORD)
    second = poplib.POP3("127.0.0.1", server.port, timeout=10)
    second.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(ALICE_PASSWORD)
    first.quit()
    second.user("alice")
    second.pass_(ALICE_PASSWORD)
    second.quit()


def curl(server: ServerThread, path: str, *args: str) -> bytes:
    exe = require_program("curl")
    return subprocess.run(
        [
            exe,
            "-sS",
            "--max-time",
            "20",
            f"pop3://127.0.0.1:{server.port}/{path}",
            "-u",
            f"alice:{ALICE_PASSWORD}",
            *args,
        ],
        check=True,
        capture_output=True,
    ).stdout


def test_curl_list_retr_dele(server: ServerThread) -> None:
    fill(server)
    listing = curl(server, "")
    assert listing.splitlines()[0] == b"1 23"
    assert len(listing.splitlines()) == 3
    for i, m in enumerate(MESSAGES, 1):
        got = curl(server, str(i))
        expected = m.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if not expected.endswith(b"\r\n"):
            expected += b"\r\n"
        assert got == expected
    curl(server, "", "-X", "DELE 1", "-I")
    assert len(message_files(server, "alice")) == 2


def fetchmail(server: ServerThread, tmp_path: Path, mode: str) -> list[bytes]:
    exe = require_program("fetchmail")
    out = tmp_path / "fetched"
    out.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll 127.0.0.1 with proto POP3 port {server.port}\n"
        f"  user 'alice' there with password '{ALICE_PASSWORD}' is 'root' here\n"
        f"  options sslproto '' {mode} fetchall no rewrite\n"
        f"  mda \"sh -c 'cat > {out}/$$'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [exe, "--nodetach", "--nosyslog", "-f", str(rc)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert result.returncode in (0, 1), result.stdout + result.stderr  # 1: no mail
    fetched = [p.read_bytes() for p in out.iterdir()]
    # fetchmail adds its own Received: header (3 lines) in front of each message.
    return sorted(b"\n".join(m.split(b"\n")[3:]) for m in fetched)


def fetchmail_expected() -> list[bytes]:
    return sorted(m.replace(b"\r\n", b"\n").rstrip(b"\n") + b"\n" for m in MESSAGES)


def test_fetchmail_keep_mode_changes_nothing(server: ServerThread, tmp_path: Path) -> None:
    fill(server)
    before = message_files(server, "alice")
    assert fetchmail(server, tmp_path, "keep") == fetchmail_expected()
    assert message_files(server, "alice") == before


def test_fetchmail_delete_mode_empties_the_maildrop(server: ServerThread, tmp_path: Path) -> None:
    fill(server)
    assert fetchmail(server, tmp_path, "no keep") == fetchmail_expected()
    assert message_files(server, "alice") == []
