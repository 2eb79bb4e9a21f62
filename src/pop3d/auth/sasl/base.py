"""The SASL mechanism interface (RFC 4422).

An exchange class is the mechanism: it names itself, says whether the password crosses the
wire and which stored passwords it can be completed from, and one is made for each AUTH.
`step` gets each client response (base64 already decoded by the core; None when AUTH carried
no initial response) and returns the next challenge, or the outcome. It runs on the event
loop: what blocks (the user database, password hashes) it hands to the authenticator's
thread pool, and what waits on the network (an OAuth provider) it awaits. A new mechanism is
one new module with such a class, listed in `pop3d.auth.sasl.MECHANISMS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from ...principal import Principal
from ...protocol.events import AuthFailure
from ..authenticator import Authenticator


@dataclass(frozen=True, slots=True)
class Challenge:
    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    principal: Principal


@dataclass(frozen=True, slots=True)
class Failure:
    reason: AuthFailure
    user: str | None = None  # who tried, when the exchange got that far (for the log)
    why: str = ""  # for the log: what was wrong, never a secret


Step = Challenge | Success | Failure


class Exchange(Protocol):
    name: ClassVar[str]
    plaintext: ClassVar[bool]  # the password itself crosses the wire (needs a secure link)
    # The password schemes a server-side secret for it can come from (SCRAM's keys); None
    # when it needs none, because the client sends the password itself.
    completes_from: ClassVar[frozenset[str] | None]
    needs_oauth2: ClassVar[bool]  # offered only with an [oauth2] section (bearer tokens)

    def __init__(self, authenticator: Authenticator) -> None: ...

    async def step(self, response: bytes | None) -> Step: ...


def decode_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None
