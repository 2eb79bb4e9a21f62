"""Whole sessions replayed against the core, the client's bytes split at every chunk size."""

from __future__ import annotations

import pytest

from pop3d.protocol.connection import Connection, SessionPolicy
from tests.transcript import TRANSCRIPTS, load, parse
from tests.unit.driver import FakeWorld, pump, run

HOWTO_USER = "test@iodigitalsec.com"


def howto_world() -> FakeWorld:
    mail = [(f"uid{n}", (TRANSCRIPTS / "howto" / f"{n}.eml").read_bytes()) for n in (1, 2)]
    return FakeWorld(users={HOWTO_USER: b"testpass"}, mail=mail)


def test_howto_session_whole() -> None:
    t = load("howto.txt")
    world = howto_world()
    assert run(world, t.client) == t.server
    assert world.expunged == ["uid1", "uid2"]
    assert world.closed == "quit"


@pytest.mark.parametrize("chunk", range(1, 64))
def test_howto_session_at_every_split(chunk: int) -> None:
    t = load("howto.txt")
    world = howto_world()
    world.read_chunk = chunk  # and the message read in pieces of the same size
    assert run(world, t.client, chunk) == t.server


def test_howto_session_step_by_step() -> None:
    """Each command's reply, alone: a client that waits for every answer sees the same."""
    t = load("howto.txt")
    world = howto_world()
    conn = Connection(SessionPolicy())
    greeting_line, greeting = t.steps[0]
    assert greeting_line == b""
    assert conn.data_to_send() == greeting
    for line, reply in t.steps[1:]:
        conn.receive_data(line)
        assert pump(world, conn) == reply, line


RFC1939_EXAMPLE = """
# RFC 1939 section 10, with our texts after +OK.
S: +OK POP3 server ready.
C: USER alice
S: +OK Send the password.
C: PASS secret pass
S: +OK Logged in, 2 messages (320 octets).
C: STAT
S: +OK 2 320
C: LIST
S: +OK 2 messages (320 octets)
S: 1 120
S: 2 200
S: .
C: UIDL
S: +OK
S: 1 whqtswO00WBw418f9t5JxYwZ
S: 2 QhdPYR:00WBw1Ph7x7
S: .
C: DELE 1
S: +OK Message 1 marked for deletion.
C: STAT
S: +OK 1 200
C: LIST
S: +OK 1 message (200 octets)
S: 2 200
S: .
C: LIST 1
S: -ERR Message 1 is deleted.
C: UIDL 1
S: -ERR Message 1 is deleted.
C: RETR 1
S: -ERR Message 1 is deleted.
C: TOP 1 0
S: -ERR Message 1 is deleted.
C: DELE 1
S: -ERR Message 1 is deleted.
C: RSET
S: +OK 2 messages (320 octets).
C: LIST 1
S: +OK 1 120
C: UIDL 2
S: +OK 2 QhdPYR:00WBw1Ph7x7
C: DELE 2
S: +OK Message 2 marked for deletion.
C: NOOP
S: +OK
C: QUIT
S: +OK Logging out, 1 message deleted.
"""


def rfc_world() -> FakeWorld:
    # Two messages of 120 and 200 octets on the wire, stored with LF line ends.
    first = b"Subject: one\n\n" + b"x" * (120 - 2 - 16) + b"\n"
    second = b"Subject: two\n\n" + b"y" * (200 - 2 - 16) + b"\n"
    return FakeWorld(mail=[("whqtswO00WBw418f9t5JxYwZ", first), ("QhdPYR:00WBw1Ph7x7", second)])


@pytest.mark.parametrize("chunk", [None, 1, 2, 3, 5, 8, 13, 64])
def test_rfc1939_example(chunk: int | None) -> None:
    t = parse(RFC1939_EXAMPLE)
    world = rfc_world()
    assert run(world, t.client, chunk) == t.server
    assert world.expunged == ["QhdPYR:00WBw1Ph7x7"]


def test_transcript_files_are_all_replayed() -> None:
    assert sorted(p.name for p in TRANSCRIPTS.glob("*.txt")) == ["howto.txt"]
