"""Random command sequences against the core: it never raises, never leaves the RFC's states,
never answers outside +OK/-ERR/+ framing, and never shows a message marked deleted."""

from __future__ import annotations

import base64
import re

from hypothesis import event, given
from hypothesis import strategies as st

from pop3d.protocol.connection import SaslOffer, SessionPolicy, State
from tests.unit.driver import FakeWorld, Session

MAIL = [(f"uid{i}", b"Subject: %d\n\n.line\nbody %d\n" % (i, i)) for i in range(1, 5)]
POLICY = SessionPolicy(
    sasl=(SaslOffer("PLAIN", True),),
    stls_available=False,
    max_line=300,
    apop_challenge="<1.2@h>",
)

numbers = st.sampled_from(["0", "1", "2", "3", "4", "5", "-1", "x", "99999999999", "1 2", ""])
commands = st.one_of(
    st.sampled_from(
        [
            "USER alice",
            "USER bob",
            "PASS secret pass",
            "PASS wrong",
            "STAT",
            "LIST",
            "UIDL",
            "RSET",
            "NOOP",
            "CAPA",
            "AUTH",
            "STLS",
            "APOP alice 00000000000000000000000000000000",
            "AUTH PLAIN",
            "*",
            "AUTH LOGIN",
            "QUIT",
            "",
            "x" * 400,
        ]
    ),
    st.builds(
        lambda c, n: f"{c} {n}", st.sampled_from(["LIST", "UIDL", "RETR", "DELE", "TOP"]), numbers
    ),
    st.builds(lambda n, k: f"TOP {n} {k}", numbers, numbers),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)


def check_views(s: Session, deleted: set[int]) -> None:
    count, octets = map(int, s.send("STAT").split()[1:3])
    visible = [n for n in range(1, 5) if n not in deleted]
    assert count == len(visible)
    listing = s.send("LIST").split(b"\r\n")[1:-2]
    assert [int(line.split()[0]) for line in listing] == visible
    assert sum(int(line.split()[1]) for line in listing) == octets
    uidls = s.send("UIDL").split(b"\r\n")[1:-2]
    assert [int(line.split()[0]) for line in uidls] == visible
    for n in deleted:
        assert s.send(f"RETR {n}") == f"-ERR Message {n} is deleted.\r\n".encode()


LOGIN = "AUTH PLAIN " + base64.b64encode(b"\0alice\0secret pass").decode()


@given(st.booleans(), st.lists(commands, max_size=40))
def test_random_sessions_keep_the_rules(start_logged_in: bool, script: list[str | bytes]) -> None:
    if start_logged_in:
        script = [LOGIN, *script]
    world = FakeWorld(mail=list(MAIL))
    s = Session(world, POLICY)
    deleted: set[int] = set()
    for command in script:
        before = s.conn.state
        reply = s.send(command)
        state = s.conn.state
        assert state in State
        if state is State.CLOSED:
            break
        assert reply == b"" or re.match(rb"^(\+OK|-ERR|\+ )", reply), reply
        if before is State.AUTHORIZATION and state is State.TRANSACTION:
            deleted.clear()
        if state is State.TRANSACTION:
            text = command if isinstance(command, str) else ""
            match = re.fullmatch(r"DELE (\d+)", text)
            if match and reply.startswith(b"+OK"):
                deleted.add(int(match.group(1)))
            if text == "RSET":
                deleted.clear()
            if s.conn.buffered_input == 0 and not s.conn.waiting:
                check_views(s, deleted)
    event("ended in " + s.conn.state.value)
    # Whatever happened, only QUIT in TRANSACTION expunges, and only what was marked.
    assert set(world.expunged) <= {f"uid{n}" for n in deleted}
