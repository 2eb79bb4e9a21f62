"""Fixtures for tests/clients: a server holding the corpus, reached over one transport.

`target` is parametrised indirectly with "plain", "stls" or "tls":

- plain: the `server` fixture, which has no [tls] at all, so it does not even offer STLS and
  a client cannot quietly upgrade: the session really is cleartext.
- stls: the `tls_server` fixture's plain port, the client told to issue STLS (and to fail
  rather than go on in cleartext).
- tls: the `tls_server` fixture's implicit-TLS port.

Whatever the client says, the server's own session log decides which transport it used:
`Target.assert_sessions()` checks that every session that logged in did so over the
transport under test.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pop3d.testing import ServerThread
from tests.clients.corpus import CORPUS, expected_crlf, expected_lf, to_lf
from tests.integration.conftest import (
    ALICE_PASSWORD,
    TlsFiles,
    message_files,
    server,
    tls_files,
    tls_server,
)

__all__ = ["server", "tls_files", "tls_server"]  # fixtures, re-exported for this directory

TRANSPORTS = ("plain", "stls", "tls")
# Every client run is bounded by this (seconds); the whole directory runs in a few seconds.
CLIENT_TIMEOUT = 20


class SessionLog(logging.Handler):
    """The server's per-session log lines (logger pop3d.session), as they happen."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Session:
    id: int
    events: list[str] = field(default_factory=list)

    @property
    def implicit_tls(self) -> bool:
        return any(re.match(r"connect tls$", e) for e in self.events)

    @property
    def starttls(self) -> bool:
        return "starttls" in self.events

    @property
    def login(self) -> str | None:
        for e in self.events:
            if m := re.match(r"login user=(\S+) ", e):
                return m.group(1)
        return None

    @property
    def logout(self) -> dict[str, str]:
        for e in self.events:
            if e.startswith("logout "):
                return dict(kv.split("=", 1) for kv in e.split()[1:])
        return {}


@dataclass
class Target:
    """A running pop3d with the corpus in alice's Maildir, and how to reach it."""

    server: ServerThread
    transport: str  # "plain", "stls" or "tls"
    tls: TlsFiles | None
    workdir: Path  # an empty directory for the client's files (also its $HOME)
    log: SessionLog
    files_before: list[str] = field(default_factory=list)

    host = "127.0.0.1"
    user = "alice"
    password = ALICE_PASSWORD

    @property
    def port(self) -> int:
        return self.server.tls_port if self.transport == "tls" else self.server.port

    @property
    def ca_file(self) -> str:
        assert self.tls is not None, "plain targets have no certificate"
        return str(self.tls.ca_file)

    def client_context(self) -> ssl.SSLContext:
        assert self.tls is not None
        return self.tls.client_context()

    def env(self) -> dict[str, str]:
        """The environment for a client program: its own HOME, so no ~/.foorc of the
        machine's is read, and a fixed locale."""
        return {**os.environ, "HOME": str(self.workdir), "LC_ALL": "C.UTF-8"}

    def run(
        self, argv: Sequence[str], *, input: bytes | None = None, ok: Iterable[int] = (0,)
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            timeout=CLIENT_TIMEOUT,
            env=self.env(),
            cwd=self.workdir,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        assert result.returncode in tuple(ok), (
            f"{argv[0]} exited {result.returncode}\n"
            f"stdout: {result.stdout[-4000:]!r}\nstderr: {result.stderr[-4000:]!r}"
        )
        return result

    # ---- what the server saw --------------------------------------------------------------

    def sessions(self) -> list[Session]:
        by_id: dict[int, Session] = {}
        for line in self.log.lines:
            m = re.match(r"session=(\d+) peer=\S+ (.*)$", line)
            if m:
                sid = int(m.group(1))
                by_id.setdefault(sid, Session(sid)).events.append(m.group(2))
        return list(by_id.values())

    def assert_sessions(self, *, deleted: int | None = None) -> list[Session]:
        """Every session that logged in used this transport; returns them.

        `deleted`: the messages the sessions deleted, all told (from the logout lines)."""
        # A client may exit before the server has seen its connection close: wait (briefly)
        # for the logout line of every session that logged in.
        deadline = time.monotonic() + 5
        while True:
            logged_in = [s for s in self.sessions() if s.login is not None]
            if all(s.logout for s in logged_in) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert logged_in, f"no session logged in: {self.log.lines}"
        for s in logged_in:
            assert s.login == self.user, s.events
            got = "tls" if s.implicit_tls else "stls" if s.starttls else "plain"
            assert got == self.transport, f"session {s.id} used {got}: {s.events}"
        if deleted is not None:
            total = sum(int(s.logout.get("deleted", "0")) for s in logged_in)
            assert total == deleted, [s.events for s in logged_in]
        return logged_in

    def assert_unchanged(self) -> None:
        """A keep-mode run: the same message files in new/ and cur/ as before."""
        assert message_files(self.server, self.user) == self.files_before
        self.assert_sessions(deleted=0)

    def assert_emptied(self) -> None:
        """A delete-mode run: the maildrop is empty."""
        assert message_files(self.server, self.user) == []
        self.assert_sessions(deleted=len(CORPUS))


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    transport = request.param
    assert transport in TRANSPORTS, transport
    if transport == "plain":
        srv: ServerThread = request.getfixturevalue("server")
        tls = None
    else:
        srv = request.getfixturevalue("tls_server")
        tls = request.getfixturevalue("tls_files")
    for _, data in CORPUS:
        srv.deliver("alice", data)
    workdir = tmp_path / "client"
    workdir.mkdir()
    handler = SessionLog()
    logger = logging.getLogger("pop3d.session")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield Target(srv, transport, tls, workdir, handler, message_files(srv, "alice"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# ---- the comparison ----------------------------------------------------------------------


def _message_id(data: bytes) -> str:
    m = re.search(rb"^Message-ID: <([^@>]+)@corpus\.pop3d\.test>", data, re.MULTILINE)
    return m.group(1).decode() if m else "?"


def _first_difference(expected: bytes, got: bytes) -> str:
    n = next(
        (i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
        min(len(expected), len(got)),
    )
    return (
        f"first difference at octet {n} (expected {len(expected)} octets, got {len(got)}):\n"
        f"  expected ...{expected[max(0, n - 40) : n + 40]!r}\n"
        f"  got      ...{got[max(0, n - 40) : n + 40]!r}"
    )


def assert_mailbox(got: Iterable[bytes], client: str) -> None:
    """`got` holds every corpus message exactly once, byte for byte after to_lf().

    Order does not matter (clients that write files name them their own way); a message
    that differs is reported by its Message-ID with its first differing octet."""
    got_lf = [to_lf(m) for m in got]
    want = {name: expected_lf(data) for name, data in CORPUS}
    have = Counter(got_lf)
    problems = []
    for name, data in want.items():
        if have[data] == 1:
            continue
        if have[data] > 1:
            problems.append(f"{name}: delivered {have[data]} times")
            continue
        same_id = [m for m in got_lf if _message_id(m) == name]
        if not same_id:
            problems.append(f"{name}: missing")
        problems.extend(f"{name}: wrong bytes, {_first_difference(data, m)}" for m in same_id)
    extra = [m for m in got_lf if m not in want.values()]
    if len(got_lf) != len(want) or problems:
        names = [_message_id(m) for m in extra]
        problems.append(f"{len(got_lf)} messages delivered, {len(want)} expected; extra: {names}")
    assert not problems, f"{client}:\n" + "\n".join(problems)


def expected_sizes() -> list[int]:
    """LIST sizes, in mailbox order."""
    return [len(expected_crlf(data)) for _, data in CORPUS]


def read_dir(directory: Path) -> list[bytes]:
    """Every regular file under `directory` (a Maildir's new/ and cur/, say), by content."""
    return [p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()]
