from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pop3d.protocol import commands as cmd
from pop3d.protocol.commands import parse_command


def test_parse_each_command() -> None:
    assert parse_command(b"USER alice@example.org") == cmd.User("alice@example.org")
    assert parse_command(b"PASS a b  c ") == cmd.Pass(b"a b  c ")
    assert parse_command(b"APOP bob c4c9334bac560ecc979e58001b3e22fb") == cmd.Apop(
        "bob", "c4c9334bac560ecc979e58001b3e22fb"
    )
    assert parse_command(b"AUTH") == cmd.Auth(None, None)
    assert parse_command(b"AUTH plain") == cmd.Auth("PLAIN", None)
    assert parse_command(b"AUTH PLAIN =") == cmd.Auth("PLAIN", "=")
    assert parse_command(b"STAT") == cmd.Stat()
    assert parse_command(b"LIST") == cmd.List(None)
    assert parse_command(b"LIST 3") == cmd.List("3")
    assert parse_command(b"UIDL 3") == cmd.Uidl("3")
    assert parse_command(b"RETR 1") == cmd.Retr("1")
    assert parse_command(b"TOP 1 10") == cmd.Top("1", "10")
    assert parse_command(b"DELE 2") == cmd.Dele("2")
    assert parse_command(b"NOOP") == cmd.Noop()
    assert parse_command(b"RSET") == cmd.Rset()
    assert parse_command(b"QUIT") == cmd.Quit()
    assert parse_command(b"CAPA") == cmd.Capa()
    assert parse_command(b"STLS") == cmd.Stls()


def test_trailing_space_is_tolerated_except_in_passwords() -> None:
    assert parse_command(b"STAT ") == cmd.Stat()
    assert parse_command(b"RETR 1 ") == cmd.Retr("1")
    assert parse_command(b"PASS x ") == cmd.Pass(b"x ")


def test_passwords_never_reach_a_repr() -> None:
    assert "hunter2" not in repr(parse_command(b"PASS hunter2"))
    assert "AAAA" not in repr(parse_command(b"AUTH PLAIN AAAA"))


def test_user_name_length_is_bounded() -> None:
    assert isinstance(parse_command(b"USER " + b"a" * 256), cmd.Invalid)


@given(st.binary(max_size=300))
def test_any_line_parses_to_a_command_or_invalid(line: bytes) -> None:
    result = parse_command(line)
    assert isinstance(
        result,
        cmd.Invalid
        | cmd.User
        | cmd.Pass
        | cmd.Apop
        | cmd.Auth
        | cmd.Stls
        | cmd.Capa
        | cmd.Quit
        | cmd.Stat
        | cmd.List
        | cmd.Uidl
        | cmd.Retr
        | cmd.Top
        | cmd.Dele
        | cmd.Noop
        | cmd.Rset,
    )
    if isinstance(result, cmd.Invalid):
        result.reason.encode("ascii")  # the reply text never echoes raw bytes
