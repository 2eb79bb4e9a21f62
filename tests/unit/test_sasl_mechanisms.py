"""The SASL mechanisms and the authenticator, against an in-memory user database."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import scramp

from pop3d.auth.authenticator import Authenticator
from pop3d.auth.base import UserEntry
from pop3d.auth.sasl import MECHANISMS
from pop3d.auth.sasl.base import Challenge, Failure, Success
from pop3d.auth.schemes import StoredPassword, hash_argon2id
from pop3d.protocol.events import AuthFailure, PasswordCredentials


class Users:
    def __init__(self, **passwords: str) -> None:
        self.entries = {n: UserEntry(n, StoredPassword.parse(p)) for n, p in passwords.items()}
        self.dummy_checks = 0
        self._dummy = StoredPassword.parse("{PLAIN}dummy")

    def lookup(self, name: str) -> UserEntry | None:
        return self.entries.get(name)

    def timing_dummy(self) -> StoredPassword:
        self.dummy_checks += 1
        return self._dummy

    def recent(self, name: str) -> tuple[UserEntry | None, StoredPassword]:
        return self.entries.get(name), self._dummy


def auth(**passwords: str) -> tuple[Authenticator, Users]:
    users = Users(**passwords)
    return Authenticator(users), users


def test_unknown_users_cost_a_verification_like_known_ones() -> None:
    authenticator, users = auth(alice="{PLAIN}pw")
    assert authenticator.login_blocking(PasswordCredentials("nobody", b"pw")) is None
    assert users.dummy_checks == 1
    assert authenticator.login_blocking(PasswordCredentials("../etc", b"pw")) is None
    assert users.dummy_checks == 2
    assert authenticator.login_blocking(PasswordCredentials("alice", b"pw")) is not None
    assert users.dummy_checks == 2


def test_cheap_passwords_are_checked_without_a_thread() -> None:
    authenticator, users = auth(alice="{PLAIN}pw", bob="{SHA256}" + "x")
    executor_calls = []

    class NoThreads:
        def submit(self, *args: object) -> None:
            executor_calls.append(args)
            raise AssertionError("no thread wanted here")

    authenticator = Authenticator(users, NoThreads())  # type: ignore[arg-type]
    ok = asyncio.run(authenticator.login(PasswordCredentials("alice", b"pw")))
    assert ok is not None
    assert ok.name == "alice"
    assert asyncio.run(authenticator.login(PasswordCredentials("nobody", b"pw"))) is None
    assert users.dummy_checks == 1  # the unknown user was checked against the stand-in, inline
    assert executor_calls == []


def test_costly_passwords_go_to_the_pool() -> None:
    users = Users(carol=hash_argon2id(b"pw"))
    pool = ThreadPoolExecutor(1)
    authenticator = Authenticator(users, pool)
    threads = []
    original = authenticator.login_blocking

    def spy(credentials: PasswordCredentials) -> object:
        threads.append(threading.current_thread().name)
        return original(credentials)

    authenticator.login_blocking = spy  # type: ignore[method-assign,assignment]
    assert asyncio.run(authenticator.login(PasswordCredentials("carol", b"pw"))) is not None
    assert threads
    assert threads[0] != "MainThread"
    pool.shutdown()


def test_plain_exchange() -> None:
    authenticator, _ = auth(alice="{PLAIN}pw")
    plain = MECHANISMS["PLAIN"]
    exchange = plain(authenticator)
    assert asyncio.run(exchange.step(None)) == Challenge(b"")
    result = asyncio.run(exchange.step(b"\0alice\0pw"))
    assert isinstance(result, Success)
    assert result.principal.name == "alice"
    assert asyncio.run(plain(authenticator).step(b"alice\0alice\0pw")) == Success(result.principal)
    assert asyncio.run(plain(authenticator).step(b"\0alice\0nope")) == Failure(
        AuthFailure.CREDENTIALS, "alice"
    )
    assert asyncio.run(plain(authenticator).step(b"x\0alice\0pw")) == Failure(
        AuthFailure.CREDENTIALS, "alice"
    )
    assert asyncio.run(plain(authenticator).step(b"\0\xff\0pw")) == Failure(AuthFailure.MALFORMED)
    assert asyncio.run(plain(authenticator).step(b"")) == Failure(AuthFailure.MALFORMED)


def test_login_exchange() -> None:
    authenticator, _ = auth(alice="{PLAIN}pw")
    exchange = MECHANISMS["LOGIN"](authenticator)
    assert asyncio.run(exchange.step(None)) == Challenge(b"Username:")
    assert asyncio.run(exchange.step(b"alice")) == Challenge(b"Password:")
    assert isinstance(asyncio.run(exchange.step(b"pw")), Success)


def run_scram(authenticator: Authenticator, user: str, password: str) -> object:
    client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    exchange = MECHANISMS["SCRAM-SHA-256"](authenticator)
    first = asyncio.run(exchange.step(client.get_client_first().encode()))
    assert isinstance(first, Challenge)
    client.set_server_first(first.data.decode())
    final = asyncio.run(exchange.step(client.get_client_final().encode()))
    if not isinstance(final, Challenge):
        return final
    client.set_server_final(final.data.decode())
    return asyncio.run(exchange.step(b""))


def test_scram_against_a_doveadm_entry() -> None:
    # doveadm pw -s SCRAM-SHA-256 -p 'pass word'
    authenticator, _ = auth(
        carol="{SCRAM-SHA-256}4096,+6XIDjeUvCZ30JHgujkgPg==,"
        "5JvfHid26Oz455FM38aoovuj+AKFdyCCYZ4R2xmW0dk=,1BzCjR6lpOOCcJz1kkjkhFbVwPM4xtD4aeufdqMYSdQ="
    )
    assert isinstance(run_scram(authenticator, "carol", "pass word"), Success)
    assert run_scram(authenticator, "carol", "wrong") == Failure(AuthFailure.CREDENTIALS, "carol")
    assert run_scram(authenticator, "nobody", "x") == Failure(AuthFailure.CREDENTIALS, "nobody")


def test_scram_with_a_comma_in_the_user_name() -> None:
    authenticator, _ = auth(**{"a,b": "{PLAIN}pw"})
    assert isinstance(run_scram(authenticator, "a,b", "pw"), Success)


def test_scram_refuses_an_extra_step() -> None:
    authenticator, _ = auth(alice="{PLAIN}pw")
    exchange = MECHANISMS["SCRAM-SHA-256"](authenticator)
    assert asyncio.run(exchange.step(b"garbage")) == Failure(AuthFailure.MALFORMED, None)
