"""POP3 commands as frozen values, and the parser that makes them from a line.

The parser checks syntax only: argument counts, and that names and keywords are printable.
Message numbers stay strings here; `maildrop.MaildropView.lookup` is the one place that turns
them into messages, so every command reports a bad number the same way.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class User:
    name: str


@dataclass(frozen=True, slots=True)
class Pass:
    password: bytes

    def __repr__(self) -> str:  # never let a password reach a log through a repr
        return "Pass(password=<hidden>)"


@dataclass(frozen=True, slots=True)
class Apop:
    name: str
    digest: str


@dataclass(frozen=True, slots=True)
class Auth:
    mechanism: str | None
    initial_response: str | None

    def __repr__(self) -> str:
        return f"Auth(mechanism={self.mechanism!r}, initial_response=<hidden>)"


@dataclass(frozen=True, slots=True)
class Stls:
    pass


@dataclass(frozen=True, slots=True)
class Capa:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Stat:
    pass


@dataclass(frozen=True, slots=True)
class List:
    msg: str | None


@dataclass(frozen=True, slots=True)
class Uidl:
    msg: str | None


@dataclass(frozen=True, slots=True)
class Retr:
    msg: str


@dataclass(frozen=True, slots=True)
class Top:
    msg: str
    lines: str


@dataclass(frozen=True, slots=True)
class Dele:
    msg: str


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Rset:
    pass


Command = (
    User
    | Pass
    | Apop
    | Auth
    | Stls
    | Capa
    | Quit
    | Stat
    | List
    | Uidl
    | Retr
    | Top
    | Dele
    | Noop
    | Rset
)


@dataclass(frozen=True, slots=True)
class Invalid:
    """A line that is not a well-formed command; `reason` is safe to send to the client."""

    reason: str


MAX_NAME = 255

_NO_ARGS: dict[str, Command] = {
    "STLS": Stls(),
    "CAPA": Capa(),
    "QUIT": Quit(),
    "STAT": Stat(),
    "NOOP": Noop(),
    "RSET": Rset(),
}


def parse_command(line: bytes) -> Command | Invalid:
    keyword_bytes, space, rest = line.partition(b" ")
    if not keyword_bytes.isalpha() or len(keyword_bytes) > 8:
        return Invalid("Unknown command.")
    keyword = keyword_bytes.decode("ascii").upper()
    if keyword == "PASS":
        # The password is the rest of the line, spaces included (RFC 1939 allows them).
        if not space or not rest:
            return Invalid("PASS needs a password.")
        if b"\0" in rest:
            return Invalid("Invalid characters in password.")
        return Pass(rest)
    try:
        text = rest.decode("utf-8")
    except UnicodeDecodeError:
        return Invalid("Invalid characters in command.")
    if not text.isprintable():
        return Invalid("Invalid characters in command.")
    args = text.split()
    if keyword in _NO_ARGS:
        return _NO_ARGS[keyword] if not args else Invalid(f"{keyword} takes no arguments.")
    match keyword, len(args):
        case ("LIST", 0) | ("UIDL", 0):
            return List(None) if keyword == "LIST" else Uidl(None)
        case ("LIST", 1) | ("UIDL", 1):
            return List(args[0]) if keyword == "LIST" else Uidl(args[0])
        case ("RETR", 1):
            return Retr(args[0])
        case ("DELE", 1):
            return Dele(args[0])
        case ("TOP", 2):
            return Top(args[0], args[1])
        case ("USER", 1):
            return User(args[0]) if len(args[0]) <= MAX_NAME else Invalid("User name too long.")
        case ("APOP", 2):
            return (
                Apop(args[0], args[1])
                if len(args[0]) <= MAX_NAME
                else Invalid("User name too long.")
            )
        case ("AUTH", 0):
            return Auth(None, None)
        case ("AUTH", 1):
            return Auth(args[0].upper(), None)
        case ("AUTH", 2):
            return Auth(args[0].upper(), args[1])
        case ("LIST" | "UIDL" | "RETR" | "DELE" | "TOP" | "USER" | "APOP" | "AUTH", 0):
            return Invalid(f"{keyword} needs an argument.")
        case ("LIST" | "UIDL" | "RETR" | "DELE" | "TOP" | "USER" | "APOP" | "AUTH", _):
            return Invalid(f"Wrong number of arguments to {keyword}.")
    return Invalid("Unknown command.")
