"""The how-to's telnet session against a live server: command by command, then all at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pop3d.testing import ServerThread
from tests.integration.conftest import LineClient
from tests.transcript import TRANSCRIPTS, load

USER = "test@iodigitalsec.com"


@pytest.fixture
def howto_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    with ServerThread.in_directory(tmp_path, users={USER: "testpass"}) as server:
        for n in (1, 2):
            server.deliver(USER, (TRANSCRIPTS / "howto" / f"{n}.eml").read_bytes())
        yield server


def replay_howto(port: int) -> None:
    """The how-to's session, command by command, each reply exactly as it shows it."""
    t = load("howto.txt")
    client = LineClient(port)
    (_, greeting), *steps = t.steps
    assert client.read_line() == greeting
    for line, reply in steps:
        client.send(line)
        assert client.read_exactly(len(reply)) == reply, line
    assert client.read_until_closed() == b""


def test_howto_step_by_step(howto_server: ServerThread) -> None:
    replay_howto(howto_server.port)
    md = howto_server.maildir(USER)
    assert list((md / "new").iterdir()) == []


def test_howto_pipelined_in_one_write(howto_server: ServerThread) -> None:
    t = load("howto.txt")
    client = LineClient(howto_server.port)
    client.send(t.client)
    assert client.read_until_closed() == t.server


def test_howto_without_quit_deletes_nothing(howto_server: ServerThread) -> None:
    t = load("howto.txt")
    client = LineClient(howto_server.port)
    without_quit = t.client.replace(b"QUIT\r\n", b"")
    client.send(without_quit)
    expected = t.server[: t.server.index(b"+OK Logging out")]
    assert client.read_exactly(len(expected)) == expected
    client.close()
    # A new session sees both messages: the dropped one committed nothing. (Its lock goes
    # when the server has noticed the drop, so an immediate retry may still find it in use.)
    assert login_when_free(howto_server.port) == b"+OK Logged in, 2 messages (791 octets).\r\n"


def login_when_free(port: int) -> bytes:
    for _ in range(50):
        again = LineClient(port)
        again.read_line()
        again.command(f"USER {USER}")
        reply = again.command("PASS testpass")
        if not reply.startswith(b"-ERR [IN-USE]"):
            return reply
        again.close()
        time.sleep(0.1)
    raise AssertionError("maildrop stayed locked")
