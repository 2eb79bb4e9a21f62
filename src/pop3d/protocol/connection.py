"""The POP3 session state machine (RFC 1939, RFC 2449, RFC 2595, RFC 5034). No I/O.

This is the only module that changes a session's state. `ALLOWED` says which commands each
state accepts; `Connection._dispatch` runs a command that `ALLOWED` let through and never checks
the state again. The caller feeds bytes in (`receive_data`), pulls `next_event()` until it returns
None, writes `data_to_send()` to the peer, and reports the outcome of each event that needs one
(see `events`). Mistakes of the peer become -ERR replies; mistakes of the caller (a completion
nobody asked for) raise `CallerError`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from . import commands as cmd
from .dotstuff import message_encoder
from .events import (
    ApopCredentials,
    AuthFailure,
    Close,
    CloseReason,
    Event,
    Expunge,
    Login,
    MessageFailure,
    OpenMaildrop,
    PasswordCredentials,
    SaslResponse,
    SaslStart,
    SendMessage,
    StartTls,
    StoreFailure,
)
from .lines import LINE_ENDLESS, LineBuffer, LineTooLong
from .maildrop import MaildropView, MessageInfo, Rejected
from .replies import RespCode, err, multiline, ok


class State(Enum):
    AUTHORIZATION = "AUTHORIZATION"
    TRANSACTION = "TRANSACTION"
    UPDATE = "UPDATE"
    CLOSED = "CLOSED"


ALLOWED: dict[State, frozenset[type[cmd.Command]]] = {
    State.AUTHORIZATION: frozenset(
        {cmd.User, cmd.Pass, cmd.Apop, cmd.Auth, cmd.Stls, cmd.Capa, cmd.Quit}
    ),
    State.TRANSACTION: frozenset(
        {
            cmd.Capa,
            cmd.Quit,
            cmd.Stat,
            cmd.List,
            cmd.Uidl,
            cmd.Retr,
            cmd.Top,
            cmd.Dele,
            cmd.Noop,
            cmd.Rset,
        }
    ),
    State.UPDATE: frozenset(),
    State.CLOSED: frozenset(),
}


class CallerError(Exception):
    """The code driving the connection broke its contract (not the peer's fault)."""


@dataclass(frozen=True, slots=True)
class SaslOffer:
    name: str
    plaintext: bool  # the password crosses the wire (PLAIN, LOGIN): needs a secure link


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """What the caller decided about this connection before it started."""

    greeting: str = "POP3 server ready."
    implementation: str | None = None
    apop_challenge: str | None = None  # "<unique@host>" when APOP is enabled
    secure: bool = False  # TLS from the start (implicit TLS)
    stls_available: bool = False
    cleartext_network: bool = True  # plaintext auth allowed here even without TLS
    sasl: tuple[SaslOffer, ...] = ()
    max_line: int = 2048
    max_sasl_line: int = 65536
    max_bad_commands_authorization: int = 3
    max_bad_commands_transaction: int = 20
    max_auth_failures: int = 3


@dataclass(slots=True)
class SessionStats:
    commands: int = 0
    retrieved: int = 0
    deleted: int = 0
    auth_failures: int = 0


_LOGIN_EVENTS = (Login, SaslStart, SaslResponse)


class Connection:
    __slots__ = (
        "_bad_commands",
        "_eof",
        "_events",
        "_in_sasl",
        "_lines",
        "_maildrop",
        "_out",
        "_waiting",
        "policy",
        "secure",
        "state",
        "stats",
        "user",
    )

    def __init__(self, policy: SessionPolicy) -> None:
        self.policy = policy
        self.state = State.AUTHORIZATION
        self.secure = policy.secure
        self.user: str | None = None  # set by USER, then by a successful login
        self.stats = SessionStats()
        self._lines = LineBuffer(policy.max_line)
        self._out: list[bytes] = []
        self._events: list[Event] = []
        self._waiting: type[Event] | None = None
        self._eof = False
        self._in_sasl = False  # a "+ " challenge is out; the next line is its answer
        self._bad_commands = 0
        self._maildrop: MaildropView | None = None
        greeting = policy.greeting
        if policy.apop_challenge:
            greeting += " " + policy.apop_challenge
        self._out.append(ok(greeting))

    # ---- input and output -----------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self.state is not State.CLOSED:
            self._lines.feed(data)

    def receive_eof(self) -> None:
        """The peer will send no more; the complete lines it sent before are still obeyed."""
        self._eof = True

    @property
    def buffered_input(self) -> int:
        return self._lines.buffered

    @property
    def waiting(self) -> bool:
        return self._waiting is not None

    def data_to_send(self) -> bytes:
        if not self._out:  # after most events: a RETR's status line goes out with its message
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def next_event(self) -> Event | None:
        """The next thing the caller must do, or None: feed more data or finish what is pending."""
        while not self._events:
            if self._waiting is not None or self.state is State.CLOSED:
                return None
            line = self._lines.next_line()
            if line is None:
                if not self._eof:
                    return None
                self._close(CloseReason.CLIENT_CLOSED)
                continue
            self._handle_line(line)
        event = self._events.pop(0)
        if not isinstance(event, Close):
            self._waiting = type(event)
        return event

    # ---- completions reported by the caller ------------------------------------------------

    def auth_succeeded(self, user: str) -> None:
        self._expect(*_LOGIN_EVENTS)
        self._in_sasl = False
        self._lines.max_line = self.policy.max_line
        self.user = user
        self._emit(OpenMaildrop())

    def auth_failed(self, reason: AuthFailure) -> None:
        self._expect(*_LOGIN_EVENTS)
        self._in_sasl = False
        self._lines.max_line = self.policy.max_line
        self.user = None
        match reason:
            case AuthFailure.TEMPORARY:
                self._reply(err("Authentication is unavailable now.", RespCode.SYS_TEMP))
                return
            case AuthFailure.MALFORMED:
                self._reply(err("Authentication exchange was malformed."))
            case AuthFailure.CREDENTIALS:
                self._reply(err("Authentication failed.", RespCode.AUTH))
        self.stats.auth_failures += 1
        if self.stats.auth_failures >= self.policy.max_auth_failures:
            self._reply(err("Too many failed authentications."))
            self._close(CloseReason.AUTH_FAILURES)

    def sasl_challenge(self, challenge: bytes) -> None:
        self._expect(SaslStart, SaslResponse)
        self._in_sasl = True
        self._lines.max_line = self.policy.max_sasl_line
        self._reply(b"+ " + base64.b64encode(challenge) + b"\r\n")

    def maildrop_opened(self, messages: Sequence[MessageInfo]) -> None:
        self._expect(OpenMaildrop)
        self._maildrop = MaildropView(messages)
        self.state = State.TRANSACTION
        self._bad_commands = 0
        count, octets = self._maildrop.stat()
        self._reply(ok(f"Logged in, {_messages(count)} ({octets} octets)."))

    def maildrop_failed(self, reason: StoreFailure) -> None:
        self._expect(OpenMaildrop)
        self.user = None
        match reason:
            case StoreFailure.LOCKED:
                self._reply(err("Maildrop is in use by another session.", RespCode.IN_USE))
            case StoreFailure.TEMPORARY:
                self._reply(err("Maildrop is unavailable, try again later.", RespCode.SYS_TEMP))
            case StoreFailure.PERMANENT:
                self._reply(err("Maildrop cannot be opened.", RespCode.SYS_PERM))

    def message_sent(self) -> None:
        self._expect(SendMessage)
        self.stats.retrieved += 1

    def message_failed(self, number: int, reason: MessageFailure) -> None:
        self._expect(SendMessage)
        match reason:
            case MessageFailure.GONE:
                self._reply(err(f"Message {number} was removed by another client."))
            case MessageFailure.TEMPORARY:
                self._reply(err(f"Message {number} cannot be read now.", RespCode.SYS_TEMP))

    def expunged(self, not_removed: int) -> None:
        self._expect(Expunge)
        assert self._maildrop is not None
        marked = len(self._maildrop.marked())
        self.stats.deleted = marked - not_removed
        if not_removed:
            self._out.append(
                err(f"{not_removed} of {marked} messages could not be deleted.", RespCode.SYS_TEMP)
            )
        elif marked:
            self._out.append(ok(f"Logging out, {_messages(marked)} deleted."))
        else:
            self._out.append(ok("Logging out."))
        self._close(CloseReason.QUIT)

    def tls_started(self) -> None:
        self._expect(StartTls)
        # RFC 2595 section 4: forget everything learned before the handshake.
        self.secure = True
        self.user = None

    def timed_out(self) -> None:
        self._abort(err("Disconnected for inactivity."), CloseReason.IDLE)

    def login_timed_out(self) -> None:
        self._abort(err("Disconnected: no login in the time allowed."), CloseReason.LOGIN_TIMEOUT)

    def shutting_down(self) -> None:
        self._abort(err("Server shutting down.", RespCode.SYS_TEMP), CloseReason.SHUTDOWN)

    def lock_lost(self) -> None:
        self._abort(
            err("The maildrop's lock was lost; nothing was deleted.", RespCode.SYS_TEMP),
            CloseReason.LOCK_LOST,
        )

    def kicked(self) -> None:
        self._abort(err("Disconnected by the administrator."), CloseReason.KICKED)

    def internal_error(self) -> None:
        self._abort(err("Internal server error.", RespCode.SYS_TEMP), CloseReason.INTERNAL_ERROR)

    # ---- internals ----------------------------------------------------------------------

    def _expect(self, *kinds: type[Event]) -> None:
        if self._waiting not in kinds:
            raise CallerError(f"no {' or '.join(k.__name__ for k in kinds)} is pending")
        self._waiting = None

    def _reply(self, data: bytes) -> None:
        self._out.append(data)

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _close(self, reason: CloseReason) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._events.append(Close(reason))

    def _abort(self, reply: bytes, reason: CloseReason) -> None:
        if self.state is not State.CLOSED:
            self._out.append(reply)
            self._events.clear()
            self._close(reason)

    def _handle_line(self, line: bytes | LineTooLong) -> None:
        if line is LINE_ENDLESS:
            # Reading what we only drop still costs CPU: a peer that never ends its line is
            # not given more of it.
            self._reply(err("Line too long."))
            self._close(CloseReason.LINE_TOO_LONG)
            return
        if self._in_sasl:
            self._sasl_answer(line)
            return
        if isinstance(line, LineTooLong):
            self._bad(f"Line too long (more than {self.policy.max_line} octets).")
            return
        command = cmd.parse_command(line)
        if isinstance(command, cmd.Invalid):
            self._bad(command.reason)
            return
        if type(command) not in ALLOWED[self.state]:
            self._bad(
                "Not allowed after login." if self.state is State.TRANSACTION else "Log in first."
            )
            return
        self.stats.commands += 1
        if self._dispatch(command):
            self._bad_commands = 0
        else:
            self._count_bad()

    def _bad(self, reason: str) -> None:
        self._reply(err(reason))
        self._count_bad()

    def _count_bad(self) -> None:
        self._bad_commands += 1
        limit = (
            self.policy.max_bad_commands_transaction
            if self.state is State.TRANSACTION
            else self.policy.max_bad_commands_authorization
        )
        if self._bad_commands > limit:
            self._reply(err("Too many bad commands."))
            self._close(CloseReason.BAD_COMMANDS)

    def _plaintext_allowed(self) -> bool:
        return self.secure or self.policy.cleartext_network

    def _offered_sasl(self) -> list[str]:
        allowed = self._plaintext_allowed()
        return [m.name for m in self.policy.sasl if allowed or not m.plaintext]

    def _dispatch(self, command: cmd.Command) -> bool:
        """Run a command its state allows. False when it was refused as a bad command."""
        match command:
            case cmd.Retr(arg):  # first: most commands of a session are RETR
                return self._send_message(arg, None)
            case cmd.Capa():
                self._reply(multiline(ok("Capability list follows"), self._capabilities()))
            case cmd.Quit():
                self._quit()
            case cmd.User(name):
                return self._user(name)
            case cmd.Pass(password):
                return self._pass(password)
            case cmd.Apop(name, digest):
                return self._apop(name, digest)
            case cmd.Auth(None, _):
                self._reply(multiline(ok("Mechanisms follow"), self._offered_sasl()))
            case cmd.Auth(str() as mechanism, initial):
                return self._auth(mechanism, initial)
            case cmd.Stls():
                return self._stls()
            case cmd.Stat():
                count, octets = self._view().stat()
                self._reply(ok(f"{count} {octets}"))
            case cmd.List(None):
                count, octets = self._view().stat()
                self._reply(
                    multiline(
                        ok(f"{_messages(count)} ({octets} octets)"),
                        (f"{n} {m.size}" for n, m in self._view().listing()),
                    )
                )
            case cmd.Uidl(None):
                self._reply(multiline(ok(), (f"{n} {m.uidl}" for n, m in self._view().listing())))
            case cmd.List(str() as arg) | cmd.Uidl(str() as arg):
                found = self._view().lookup(arg)
                if isinstance(found, Rejected):
                    return self._refuse(found)
                number, message = found
                value = message.size if isinstance(command, cmd.List) else message.uidl
                self._reply(ok(f"{number} {value}"))
            case cmd.Top(arg, lines):
                if not lines.isdigit() or not lines.isascii():
                    self._reply(err(f"Invalid number of lines: {lines[:20]}"))
                    return False
                return self._send_message(arg, int(lines))
            case cmd.Dele(arg):
                found = self._view().lookup(arg)
                if isinstance(found, Rejected):
                    return self._refuse(found)
                self._view().delete(found[0])
                self._reply(ok(f"Message {found[0]} marked for deletion."))
            case cmd.Noop():
                self._reply(ok())
            case cmd.Rset():
                self._view().reset()
                count, octets = self._view().stat()
                self._reply(ok(f"{_messages(count)} ({octets} octets)."))
        return True

    def _view(self) -> MaildropView:
        assert self._maildrop is not None, "TRANSACTION without a maildrop"
        return self._maildrop

    def _capabilities(self) -> list[str]:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.state is State.AUTHORIZATION:
            if self._plaintext_allowed():
                caps.append("USER")
            offered = self._offered_sasl()
            if offered:
                caps.append("SASL " + " ".join(offered))
            if self.policy.stls_available and not self.secure:
                caps.append("STLS")
        if self.policy.implementation:
            caps.append("IMPLEMENTATION " + self.policy.implementation)
        return caps

    def _quit(self) -> None:
        if self.state is State.AUTHORIZATION:
            self._reply(ok("Bye."))
            self._close(CloseReason.QUIT)
            return
        self.state = State.UPDATE
        self._emit(Expunge(self._view().marked()))

    def _refuse_cleartext(self) -> bool:
        if self._plaintext_allowed():
            return False
        self._reply(
            err(
                "Plaintext authentication is not allowed on an unencrypted connection; "
                "use STLS first.",
                RespCode.AUTH,
            )
        )
        return True

    def _user(self, name: str) -> bool:
        if self._refuse_cleartext():
            return True
        self.user = name
        self._reply(ok("Send the password."))
        return True

    def _pass(self, password: bytes) -> bool:
        if self._refuse_cleartext():
            return True
        if self.user is None:
            self._reply(err("Send USER first."))
            return False
        user, self.user = self.user, None
        self._emit(Login(PasswordCredentials(user, password)))
        return True

    def _apop(self, name: str, digest: str) -> bool:
        challenge = self.policy.apop_challenge
        if challenge is None:
            self._reply(err("APOP is not enabled."))
            return False
        if len(digest) != 32 or not _is_hex(digest):
            self._reply(err("APOP digest must be 32 hexadecimal digits."))
            return False
        self.user = None
        self._emit(Login(ApopCredentials(name, challenge, digest.lower())))
        return True

    def _auth(self, mechanism: str, initial: str | None) -> bool:
        offer = next((m for m in self.policy.sasl if m.name == mechanism), None)
        if offer is None:
            self._reply(err(f"Unsupported authentication mechanism {mechanism[:40]}."))
            return False
        if offer.plaintext and self._refuse_cleartext():
            return True
        response: bytes | None = None
        if initial is not None:
            decoded = _decode_base64(initial)
            if decoded is None:
                self._reply(err("Invalid base64 in the initial response."))
                return False
            response = decoded
        self.user = None
        self._emit(SaslStart(mechanism, response))
        return True

    def _sasl_answer(self, line: bytes | LineTooLong) -> None:
        if isinstance(line, LineTooLong):
            self._sasl_abort(err("Authentication line too long."))
            return
        if line == b"*":
            self._sasl_abort(err("Authentication cancelled."))
            return
        decoded = _decode_base64(line)
        if decoded is None:
            self._sasl_abort(err("Invalid base64 in the authentication response."))
            return
        self._in_sasl = False
        self._emit(SaslResponse(decoded))

    def _sasl_abort(self, reply: bytes) -> None:
        self._in_sasl = False
        self._lines.max_line = self.policy.max_line
        self._reply(reply)

    def _stls(self) -> bool:
        if self.secure:
            self._reply(err("TLS is already active."))
            return False
        if not self.policy.stls_available:
            self._reply(err("STLS is not available."))
            return False
        # Whatever the client sent after STLS came in plaintext and must not be obeyed after the
        # handshake (CVE-2011-0411): drop it before anything else reads it.
        self._lines.clear()
        self._reply(ok("Begin TLS negotiation."))
        self._emit(StartTls())
        return True

    def _send_message(self, arg: str, body_lines: int | None) -> bool:
        found = self._view().lookup(arg)
        if isinstance(found, Rejected):
            return self._refuse(found)
        number, message = found
        status = ok(f"{message.size} octets") if body_lines is None else ok()
        self._emit(SendMessage(number, message, status, message_encoder(body_lines)))
        return True

    def _refuse(self, rejected: Rejected) -> bool:
        self._reply(err(rejected.text))
        return not rejected.malformed


def _messages(count: int) -> str:
    return "1 message" if count == 1 else f"{count} messages"


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _decode_base64(text: str | bytes) -> bytes | None:
    """RFC 5034: "=" is an empty initial response; anything not strict base64 is refused."""
    if text in ("=", b"="):
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
