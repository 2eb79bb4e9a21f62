"""What the core asks of its caller, and the answers the caller gives back.

The core never performs I/O. When a command needs the outside world (check a password, lock a
maildrop, stream a message, remove messages, start TLS), `Connection.next_event` returns one of
the events below and the connection waits until the caller reports the outcome through the
matching `Connection` method. Lines that arrive meanwhile stay queued, in order (PIPELINING).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from .dotstuff import Encoder
from .maildrop import MessageInfo


@dataclass(frozen=True, slots=True)
class PasswordCredentials:
    user: str
    password: bytes

    def __repr__(self) -> str:
        return f"PasswordCredentials(user={self.user!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class ApopCredentials:
    user: str
    challenge: str  # the timestamp from our greeting, angle brackets included
    digest: str  # lower-case hex MD5 of challenge + password, as the client sent it


Credentials = PasswordCredentials | ApopCredentials


@dataclass(frozen=True, slots=True)
class Login:
    """USER/PASS or APOP: verify, then answer with auth_succeeded or auth_failed."""

    credentials: Credentials


@dataclass(frozen=True, slots=True)
class SaslStart:
    """AUTH: begin an exchange; answer with sasl_challenge, auth_succeeded or auth_failed."""

    mechanism: str
    initial_response: bytes | None  # None: none was sent; b"" for "="

    def __repr__(self) -> str:
        return f"SaslStart(mechanism={self.mechanism!r})"


@dataclass(frozen=True, slots=True)
class SaslResponse:
    """The client's answer to our last challenge, base64-decoded."""

    data: bytes

    def __repr__(self) -> str:
        return "SaslResponse(<hidden>)"


@dataclass(frozen=True, slots=True)
class OpenMaildrop:
    """Lock the authenticated user's maildrop and list it: maildrop_opened or maildrop_failed."""


@dataclass(frozen=True, slots=True)
class SendMessage:
    """RETR or TOP. Open the message; if that fails call message_failed. Otherwise write
    `status_line`, then every chunk of the stored message through `encoder.feed` (stop early once
    `encoder.done`), then `encoder.finish()` (or all of it with `encoder.whole`), and call
    message_sent."""

    number: int
    message: MessageInfo
    status_line: bytes
    encoder: Encoder


@dataclass(frozen=True, slots=True)
class Expunge:
    """UPDATE state (after QUIT): remove these messages (there may be none), release the
    maildrop, then call expunged: the reply goes out once the lock is free, so a client that
    reconnects at once finds its maildrop available."""

    messages: tuple[MessageInfo, ...]


@dataclass(frozen=True, slots=True)
class StartTls:
    """STLS was accepted: stop reading, write what is pending, handshake, then tls_started."""


class CloseReason(StrEnum):
    QUIT = "quit"
    CLIENT_CLOSED = "connection closed by client"
    AUTH_FAILURES = "too many failed authentications"
    BAD_COMMANDS = "too many bad commands"
    LINE_TOO_LONG = "line too long"  # a line went on far past the limit
    IDLE = "idle timeout"
    LOGIN_TIMEOUT = "login timeout"
    SHUTDOWN = "server shutdown"
    INTERNAL_ERROR = "internal error"
    KICKED = "kicked"  # by an administrator (pop3d kick)
    LOCK_LOST = "lock lost"  # the maildrop's lease was taken over


@dataclass(frozen=True, slots=True)
class Close:
    """Write what is pending and close. Nothing is removed unless an Expunge came first."""

    reason: CloseReason


Event = Login | SaslStart | SaslResponse | OpenMaildrop | SendMessage | Expunge | StartTls | Close


class AuthFailure(Enum):
    CREDENTIALS = "credentials"  # wrong password, unknown user, failed SASL exchange
    MALFORMED = "malformed"  # the client broke the mechanism's rules
    TEMPORARY = "temporary"  # our side (user database unreadable, ...)


class StoreFailure(Enum):
    LOCKED = "locked"  # another session holds the maildrop
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


class MessageFailure(Enum):
    GONE = "gone"  # removed by someone else since the session started
    TEMPORARY = "temporary"
