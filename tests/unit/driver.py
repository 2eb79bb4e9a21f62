"""Drives the sans-IO core the way the asyncio adapter does, with in-memory users and mail."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from pop3d.protocol.connection import Connection, SessionPolicy
from pop3d.protocol.dotstuff import wire_size
from pop3d.protocol.events import (
    ApopCredentials,
    AuthFailure,
    Close,
    Expunge,
    Login,
    OpenMaildrop,
    PasswordCredentials,
    SaslResponse,
    SaslStart,
    SendMessage,
    StoreFailure,
)
from pop3d.protocol.maildrop import MessageInfo


@dataclass
class FakeWorld:
    users: dict[str, bytes] = field(default_factory=lambda: {"alice": b"secret pass"})
    mail: list[tuple[str, bytes]] = field(default_factory=list)  # (uidl, stored bytes)
    locked: bool = False
    read_chunk: int = 7  # small, so message streaming crosses many chunk boundaries
    expunged: list[str] = field(default_factory=list)
    closed: str | None = None

    def messages(self) -> list[MessageInfo]:
        return [MessageInfo(uidl, wire_size([data]), data) for uidl, data in self.mail]


def run(
    world: FakeWorld, client: bytes, chunk: int | None = None, policy: SessionPolicy | None = None
) -> bytes:
    """Feed `client` in pieces of `chunk` bytes (all at once if None); return everything sent."""
    conn = Connection(policy or SessionPolicy())
    out = [conn.data_to_send()]
    pieces = (
        [client] if chunk is None else [client[i : i + chunk] for i in range(0, len(client), chunk)]
    )
    for piece in pieces:
        conn.receive_data(piece)
        out.append(pump(world, conn))
        if world.closed:
            break
    return b"".join(out)


def pump(world: FakeWorld, conn: Connection) -> bytes:
    out: list[bytes] = []
    while (event := conn.next_event()) is not None:
        out.append(conn.data_to_send())
        match event:
            case Login(PasswordCredentials(user, password)):
                if world.users.get(user) == password:
                    conn.auth_succeeded(user)
                else:
                    conn.auth_failed(AuthFailure.CREDENTIALS)
            case Login(ApopCredentials(user, challenge, digest)):
                secret = world.users.get(user)
                ok = (
                    secret is not None
                    and hashlib.md5(challenge.encode() + secret).hexdigest() == digest
                )
                if ok:
                    conn.auth_succeeded(user)
                else:
                    conn.auth_failed(AuthFailure.CREDENTIALS)
            case OpenMaildrop():
                if world.locked:
                    conn.maildrop_failed(StoreFailure.LOCKED)
                else:
                    conn.maildrop_opened(world.messages())
            case SendMessage(message=message, status_line=status, encoder=encoder):
                out.append(status)
                data = message.ref
                assert isinstance(data, bytes)
                for i in range(0, len(data), world.read_chunk):
                    out.append(encoder.feed(data[i : i + world.read_chunk]))
                    if encoder.done:
                        break
                out.append(encoder.finish())
                conn.message_sent()
            case SaslStart(_, None):
                conn.sasl_challenge(b"")
            case SaslStart(_, bytes() as response) | SaslResponse(response):
                # Every mechanism is PLAIN here: authzid NUL authcid NUL password.
                parts = response.split(b"\0")
                user = parts[1].decode(errors="replace") if len(parts) == 3 else ""
                if len(parts) == 3 and world.users.get(user) == parts[2]:
                    conn.auth_succeeded(user)
                else:
                    conn.auth_failed(AuthFailure.CREDENTIALS)
            case Expunge(messages):
                world.expunged.extend(m.uidl for m in messages)
                conn.expunged(0)
            case Close(reason):
                world.closed = reason
            case _:
                raise AssertionError(f"unexpected {event!r}")
    out.append(conn.data_to_send())
    return b"".join(out)


class Session:
    """One command at a time: `send` returns exactly the bytes the server answered."""

    def __init__(self, world: FakeWorld | None = None, policy: SessionPolicy | None = None) -> None:
        self.world = world or FakeWorld()
        self.conn = Connection(policy or SessionPolicy())
        self.greeting = self.conn.data_to_send()

    def send(self, line: str | bytes) -> bytes:
        data = line.encode() if isinstance(line, str) else line
        self.conn.receive_data(data + b"\r\n")
        return pump(self.world, self.conn)

    def feed(self, data: bytes) -> bytes:
        self.conn.receive_data(data)
        return pump(self.world, self.conn)

    def login(self) -> bytes:
        self.send("USER alice")
        return self.send("PASS secret pass")
