"""RFC 1939 and RFC 2449 rules, one at a time, with the exact bytes the server sends."""

from __future__ import annotations

import hashlib

import pytest

from pop3d.protocol.connection import CallerError, Connection, SaslOffer, SessionPolicy, State
from pop3d.protocol.events import Close, Login, MessageFailure, SendMessage, StoreFailure
from pop3d.protocol.lines import ENDLESS_MARGIN
from pop3d.protocol.maildrop import MessageInfo
from tests.unit.driver import FakeWorld, Session, pump

MESSAGE = b"Subject: hi\n\nline 1\nline 2\n.dot line\nline 4\n"


def world(*messages: bytes) -> FakeWorld:
    return FakeWorld(mail=[(f"u{i}", m) for i, m in enumerate(messages or (MESSAGE,), 1)])


def logged_in(*messages: bytes, **policy: object) -> Session:
    s = Session(world(*messages), SessionPolicy(**policy))  # type: ignore[arg-type]
    assert s.login().startswith(b"+OK Logged in")
    return s


def test_greeting() -> None:
    assert Session().greeting == b"+OK POP3 server ready.\r\n"


def test_greeting_text_is_configurable() -> None:
    assert (
        Session(policy=SessionPolicy(greeting="Hello there.")).greeting == b"+OK Hello there.\r\n"
    )


def test_keywords_are_case_insensitive() -> None:
    s = Session(world())
    assert s.send("user alice") == b"+OK Send the password.\r\n"
    assert s.send("pAsS secret pass").startswith(b"+OK Logged in")
    assert s.send("stat") == b"+OK 1 50\r\n"


def test_password_may_contain_spaces_and_keeps_them_all() -> None:
    s = Session(FakeWorld(users={"bob": b" two  spaces "}, mail=[]))
    s.send("USER bob")
    assert s.send("PASS  two  spaces ") == b"+OK Logged in, 0 messages (0 octets).\r\n"


def test_wrong_password_then_retry_needs_user_again() -> None:
    s = Session(world())
    s.send("USER alice")
    assert s.send("PASS nope") == b"-ERR [AUTH] Authentication failed.\r\n"
    assert s.send("PASS secret pass") == b"-ERR Send USER first.\r\n"
    s.send("USER alice")
    assert s.send("PASS secret pass").startswith(b"+OK")


def test_unknown_user_gets_the_same_reply_as_a_wrong_password() -> None:
    s = Session(world())
    s.send("USER mallory")
    assert s.send("PASS secret pass") == b"-ERR [AUTH] Authentication failed.\r\n"


@pytest.mark.parametrize(
    "command", ["STAT", "LIST", "LIST 1", "RETR 1", "DELE 1", "NOOP", "RSET", "TOP 1 1", "UIDL"]
)
def test_transaction_commands_before_login(command: str) -> None:
    s = Session(world())
    assert s.send(command) == b"-ERR Log in first.\r\n"


@pytest.mark.parametrize(
    "command", ["USER alice", "PASS x", "APOP a " + "0" * 32, "AUTH PLAIN", "STLS"]
)
def test_authorization_commands_after_login(command: str) -> None:
    s = logged_in()
    assert s.send(command) == b"-ERR Not allowed after login.\r\n"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("RETR", b"-ERR RETR needs an argument.\r\n"),
        ("RETR x", b"-ERR Invalid message number: x\r\n"),
        ("RETR -1", b"-ERR Invalid message number: -1\r\n"),
        ("RETR +1", b"-ERR Invalid message number: +1\r\n"),
        ("RETR 1x", b"-ERR Invalid message number: 1x\r\n"),
        ("RETR 0", b"-ERR There is no message 0: messages are numbered from 1.\r\n"),
        ("LIST 0", b"-ERR There is no message 0: messages are numbered from 1.\r\n"),
        ("UIDL 0", b"-ERR There is no message 0: messages are numbered from 1.\r\n"),
        ("DELE 0", b"-ERR There is no message 0: messages are numbered from 1.\r\n"),
        ("TOP 0 1", b"-ERR There is no message 0: messages are numbered from 1.\r\n"),
        ("RETR 2", b"-ERR There is no message 2.\r\n"),
        ("RETR 4294967297", b"-ERR There is no message 4294967297.\r\n"),
        ("RETR 123456789012345678901", b"-ERR Invalid message number: too large.\r\n"),
        ("RETR 1 2", b"-ERR Wrong number of arguments to RETR.\r\n"),
        ("RETR \u0661", b"-ERR Invalid message number: \xd9\xa1\r\n"),
        ("LIST 1 2", b"-ERR Wrong number of arguments to LIST.\r\n"),
        ("TOP 1", b"-ERR Wrong number of arguments to TOP.\r\n"),
        ("TOP 1 x", b"-ERR Invalid number of lines: x\r\n"),
        ("TOP 1 -1", b"-ERR Invalid number of lines: -1\r\n"),
        ("STAT 1", b"-ERR STAT takes no arguments.\r\n"),
        ("XTND", b"-ERR Unknown command.\r\n"),
        ("LAST", b"-ERR Unknown command.\r\n"),
    ],
)
def test_bad_arguments(line: str, reply: bytes) -> None:
    s = logged_in()
    assert s.send(line) == reply
    assert s.send("STAT") == b"+OK 1 50\r\n"  # and the session goes on


def test_leading_zeros_are_a_number() -> None:
    s = logged_in()
    assert s.send("LIST 001") == b"+OK 1 50\r\n"


def test_stat_list_uidl_skip_deleted_messages() -> None:
    s = logged_in(b"a\n", b"bb\n", b"ccc\n")
    s.send("DELE 2")
    assert s.send("STAT") == b"+OK 2 8\r\n"
    assert s.send("LIST") == b"+OK 2 messages (8 octets)\r\n1 3\r\n3 5\r\n.\r\n"
    assert s.send("UIDL") == b"+OK\r\n1 u1\r\n3 u3\r\n.\r\n"
    assert s.send("DELE 2") == b"-ERR Message 2 is deleted.\r\n"
    assert s.send("RSET") == b"+OK 3 messages (12 octets).\r\n"
    assert s.send("LIST 2") == b"+OK 2 4\r\n"


def test_sizes_count_crlf_whatever_the_stored_line_ends() -> None:
    lf, crlf, mixed = b"a\nb\n", b"a\r\nb\r\n", b"a\r\nb\n"
    s = logged_in(lf, crlf, mixed)
    assert s.send("LIST") == b"+OK 3 messages (18 octets)\r\n1 6\r\n2 6\r\n3 6\r\n.\r\n"
    for n in (1, 2, 3):
        assert s.send(f"RETR {n}") == b"+OK 6 octets\r\na\r\nb\r\n.\r\n"


def test_retr_stuffs_dots_including_the_first_line() -> None:
    s = logged_in(b".first\n..second\n.\nlast\n")
    assert s.send("RETR 1") == b"+OK 27 octets\r\n..first\r\n...second\r\n..\r\nlast\r\n.\r\n"


def test_retr_of_a_message_without_final_newline_ends_with_crlf_dot_crlf() -> None:
    s = logged_in(b"Subject: x\n\nno newline at end")
    reply = s.send("RETR 1")
    assert reply == b"+OK 33 octets\r\nSubject: x\r\n\r\nno newline at end\r\n.\r\n"


def test_retr_of_an_empty_message() -> None:
    s = logged_in(b"")
    assert s.send("LIST 1") == b"+OK 1 0\r\n"
    assert s.send("RETR 1") == b"+OK 0 octets\r\n.\r\n"


@pytest.mark.parametrize(
    ("lines", "body"),
    [
        (0, b""),
        (1, b"line 1\r\n"),
        (3, b"line 1\r\nline 2\r\n..dot line\r\n"),
        (4, b"line 1\r\nline 2\r\n..dot line\r\nline 4\r\n"),
        (100, b"line 1\r\nline 2\r\n..dot line\r\nline 4\r\n"),
    ],
)
def test_top_sends_header_blank_line_and_exactly_n_lines(lines: int, body: bytes) -> None:
    s = logged_in()
    assert s.send(f"TOP 1 {lines}") == b"+OK\r\nSubject: hi\r\n\r\n" + body + b".\r\n"


def test_top_of_a_message_with_no_body_separator_sends_the_header() -> None:
    s = logged_in(b"Subject: only a header\n")
    assert s.send("TOP 1 5") == b"+OK\r\nSubject: only a header\r\n.\r\n"


def test_top_of_a_message_with_an_empty_header() -> None:
    s = logged_in(b"\nbody 1\nbody 2\n")
    assert s.send("TOP 1 1") == b"+OK\r\n\r\nbody 1\r\n.\r\n"


def test_capa_in_authorization_and_transaction() -> None:
    s = Session(world())
    expected = b"TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
    assert s.send("CAPA") == b"+OK Capability list follows\r\n" + expected + b"USER\r\n.\r\n"
    s.login()
    assert s.send("CAPA") == b"+OK Capability list follows\r\n" + expected + b".\r\n"


def test_capa_implementation_only_when_configured() -> None:
    s = Session(policy=SessionPolicy(implementation="pop3d 0.1"))
    assert b"IMPLEMENTATION pop3d 0.1\r\n" in s.send("CAPA")
    assert b"IMPLEMENTATION" not in Session().send("CAPA")


def test_line_too_long_is_refused_and_skipped() -> None:
    s = logged_in(max_line=300)
    reply = s.feed(b"NOOP " + b"x" * 1000)
    assert reply == b"-ERR Line too long (more than 300 octets).\r\n"
    assert s.feed(b"y" * 5000) == b""  # the rest of that line is dropped as it comes
    assert s.feed(b"z\r\nSTAT\r\n") == b"+OK 1 50\r\n"
    assert s.conn.buffered_input == 0


def test_a_line_that_never_ends_closes_the_session_past_the_margin() -> None:
    s = logged_in(max_line=300)
    assert s.feed(b"x" * 301) == b"-ERR Line too long (more than 300 octets).\r\n"
    sent = 301
    while s.world.closed is None:
        reply = s.feed(b"x" * 1024)
        sent += 1024
    assert reply == b"-ERR Line too long.\r\n"
    assert s.world.closed == "line too long"
    assert 300 + ENDLESS_MARGIN < sent <= 300 + ENDLESS_MARGIN + 1024
    assert s.feed(b"\r\nSTAT\r\n") == b""  # nothing more is read, let alone obeyed
    assert s.world.expunged == []


def test_a_sasl_line_that_never_ends_closes_the_session() -> None:
    s = Session(world(), SessionPolicy(sasl=(SaslOffer("PLAIN", True),), max_sasl_line=20_000))
    assert s.send("AUTH PLAIN") == b"+ \r\n"
    assert s.feed(b"A" * (20_000 + ENDLESS_MARGIN)) == b"-ERR Authentication line too long.\r\n"
    assert s.feed(b"A" * 2) == b"-ERR Line too long.\r\n"
    assert s.world.closed == "line too long"


def test_a_255_octet_command_line_is_accepted() -> None:
    s = Session(FakeWorld(users={"u" * 240: b"p"}, mail=[]))
    line = "USER " + "u" * 240 + " " * 8  # 253 octets + CRLF = 255
    assert s.send(line) == b"+OK Send the password.\r\n"


def test_too_many_bad_commands_before_login_closes() -> None:
    s = Session(world())
    for _ in range(3):
        assert s.send("BOGUS") == b"-ERR Unknown command.\r\n"
    assert s.send("BOGUS") == b"-ERR Unknown command.\r\n-ERR Too many bad commands.\r\n"
    assert s.world.closed == "too many bad commands"
    assert s.send("CAPA") == b""


def test_too_many_bad_commands_after_login_closes_after_twenty() -> None:
    s = logged_in()
    for _ in range(20):
        s.send("BOGUS")
    assert s.world.closed is None
    assert s.send("RETR x").endswith(b"-ERR Too many bad commands.\r\n")
    assert s.world.closed == "too many bad commands"


def test_a_good_command_resets_the_bad_command_count() -> None:
    s = Session(world())
    for _ in range(10):
        s.send("BOGUS")
        s.send("BOGUS")
        assert s.send("CAPA").startswith(b"+OK")
    assert s.world.closed is None


def test_quit_in_authorization_deletes_nothing() -> None:
    s = Session(world())
    assert s.send("QUIT") == b"+OK Bye.\r\n"
    assert s.world.closed == "quit"


def test_quit_without_deletions() -> None:
    s = logged_in()
    assert s.send("QUIT") == b"+OK Logging out.\r\n"
    assert s.world.expunged == []


def test_deletions_happen_only_at_quit() -> None:
    s = logged_in(b"a\n", b"b\n")
    s.send("DELE 1")
    assert s.world.expunged == []
    assert s.send("QUIT") == b"+OK Logging out, 1 message deleted.\r\n"
    assert s.world.expunged == ["u1"]


def test_eof_without_quit_deletes_nothing() -> None:
    s = logged_in()
    s.send("DELE 1")
    s.conn.receive_eof()
    assert s.conn.next_event() == Close("connection closed by client")
    assert s.world.expunged == []


def test_quit_sent_just_before_eof_is_obeyed() -> None:
    s = logged_in()
    s.conn.receive_data(b"DELE 1\r\nQUIT\r\n")
    s.conn.receive_eof()
    assert pump(s.world, s.conn).endswith(b"+OK Logging out, 1 message deleted.\r\n")
    assert s.world.expunged == ["u1"]


def test_maildrop_in_use() -> None:
    s = Session(world())
    s.world.locked = True
    s.send("USER alice")
    assert s.send("PASS secret pass") == b"-ERR [IN-USE] Maildrop is in use by another session.\r\n"
    assert s.conn.state is State.AUTHORIZATION
    s.world.locked = False
    assert s.login().startswith(b"+OK Logged in")


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"USER al\x00ice", b"-ERR Invalid characters in command.\r\n"),
        (b"USER \xff\xfe", b"-ERR Invalid characters in command.\r\n"),
        (b"USER a\tb", b"-ERR Invalid characters in command.\r\n"),
        (b"\x00\x01", b"-ERR Unknown command.\r\n"),
        (b"\xc3\xa9TAT", b"-ERR Unknown command.\r\n"),
        (b"PASS a\x00b", b"-ERR Invalid characters in password.\r\n"),
    ],
)
def test_invalid_bytes_in_commands(line: bytes, reply: bytes) -> None:
    s = Session(world())
    assert s.send(line) == reply
    assert s.send("CAPA").startswith(b"+OK")


def test_non_utf8_password_bytes_reach_the_authenticator() -> None:
    s = Session(FakeWorld(users={"latin": b"p\xe4ss"}, mail=[]))
    s.send("USER latin")
    assert s.send(b"PASS p\xe4ss").startswith(b"+OK Logged in")


def test_apop_is_off_by_default() -> None:
    s = Session(world())
    assert s.send("APOP alice " + "0" * 32) == b"-ERR APOP is not enabled.\r\n"


def test_apop_when_enabled() -> None:
    challenge = "<1896.697170952@dbc.mtview.ca.us>"
    s = Session(world(), SessionPolicy(apop_challenge=challenge))
    assert s.greeting == b"+OK POP3 server ready. <1896.697170952@dbc.mtview.ca.us>\r\n"
    good = hashlib.md5(challenge.encode() + b"secret pass").hexdigest()
    assert s.send("APOP alice " + "0" * 32) == b"-ERR [AUTH] Authentication failed.\r\n"
    assert s.send("APOP alice xyz") == b"-ERR APOP digest must be 32 hexadecimal digits.\r\n"
    assert s.send("APOP alice " + good.upper()).startswith(b"+OK Logged in")


def test_too_many_auth_failures_close_the_session() -> None:
    s = Session(world())
    for _ in range(2):
        s.send("USER alice")
        assert s.send("PASS bad") == b"-ERR [AUTH] Authentication failed.\r\n"
    s.send("USER alice")
    assert s.send("PASS bad") == (
        b"-ERR [AUTH] Authentication failed.\r\n-ERR Too many failed authentications.\r\n"
    )
    assert s.world.closed == "too many failed authentications"


def test_failed_expunge_names_how_many_were_not_removed() -> None:
    conn = Connection(SessionPolicy())
    conn.receive_data(b"USER alice\r\nPASS x\r\nDELE 1\r\nDELE 2\r\nQUIT\r\n")
    assert isinstance(conn.next_event(), Login)
    conn.auth_succeeded("alice")
    conn.next_event()
    conn.maildrop_opened([MessageInfo("a", 1, None), MessageInfo("b", 1, None)])
    event = conn.next_event()
    conn.data_to_send()
    conn.expunged(1)
    assert conn.data_to_send() == b"-ERR [SYS/TEMP] 1 of 2 messages could not be deleted.\r\n"
    assert event is not None
    assert conn.next_event() == Close("quit")


def test_message_gone_and_unreadable() -> None:
    conn = Connection(SessionPolicy())
    conn.receive_data(b"USER a\r\nPASS x\r\nRETR 1\r\nRETR 1\r\n")
    conn.next_event()
    conn.auth_succeeded("a")
    conn.next_event()
    conn.maildrop_opened([MessageInfo("a", 1, None)])
    conn.data_to_send()
    assert isinstance(conn.next_event(), SendMessage)
    conn.message_failed(1, MessageFailure.GONE)
    assert conn.data_to_send() == b"-ERR Message 1 was removed by another client.\r\n"
    assert isinstance(conn.next_event(), SendMessage)
    conn.message_failed(1, MessageFailure.TEMPORARY)
    assert conn.data_to_send() == b"-ERR [SYS/TEMP] Message 1 cannot be read now.\r\n"


def test_maildrop_failures_map_to_response_codes() -> None:
    for failure, reply in [
        (StoreFailure.TEMPORARY, b"-ERR [SYS/TEMP] Maildrop is unavailable, try again later.\r\n"),
        (StoreFailure.PERMANENT, b"-ERR [SYS/PERM] Maildrop cannot be opened.\r\n"),
    ]:
        conn = Connection(SessionPolicy())
        conn.receive_data(b"USER a\r\nPASS x\r\n")
        conn.next_event()
        conn.auth_succeeded("a")
        conn.next_event()
        conn.data_to_send()
        conn.maildrop_failed(failure)
        assert conn.data_to_send() == reply
        assert conn.state is State.AUTHORIZATION


def test_completing_what_was_not_asked_is_a_caller_error() -> None:
    conn = Connection(SessionPolicy())
    with pytest.raises(CallerError):
        conn.message_sent()
    with pytest.raises(CallerError):
        conn.auth_succeeded("x")


def test_commands_wait_while_an_event_is_pending() -> None:
    conn = Connection(SessionPolicy())
    conn.data_to_send()
    conn.receive_data(b"USER a\r\nPASS x\r\nCAPA\r\n")
    assert isinstance(conn.next_event(), Login)
    assert conn.next_event() is None  # CAPA waits for the login to finish
    assert conn.data_to_send() == b"+OK Send the password.\r\n"


def test_idle_timeout_and_shutdown_messages() -> None:
    conn = Connection(SessionPolicy())
    conn.data_to_send()
    conn.timed_out()
    assert conn.data_to_send() == b"-ERR Disconnected for inactivity.\r\n"
    assert conn.next_event() == Close("idle timeout")
    conn = Connection(SessionPolicy())
    conn.data_to_send()
    conn.shutting_down()
    assert conn.data_to_send() == b"-ERR [SYS/TEMP] Server shutting down.\r\n"
