"""Fixtures for tests/clients: a server holding the corpus, reached over one transport.

`target` is parametrised indirectly with "plain", "stls" or "tls":

- plain: the `server` fixture, which has no [tls] at all, so it does not even offer STLS and
  a client cannot quietly upgrade: the session really is cleartext.
- stls: the `tls_server` fixture's plain port, the client told to issue STLS (and to fail
  rather than go on in cleartext).
- tls: the `tls_server` fixture's implicit-TLS port.

Those runs tell each client how to log in (USER/PASS mostly). The second pass, with a
(transport, database) pair as the parameter, leaves each client on its own default
authentication settings, against a server (with TLS, so also offering STLS) whose users come
from one of `DATABASES`: the embedded default as `pop3d serve` makes it, or a passwd-file of
crypt hashes or of SCRAM keys. The client is still told which transport to use.

Whatever the client says, the server's own session log decides which transport it used:
`Target.assert_sessions()` checks that every session that logged in did so over the
transport under test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import ssl
import subprocess
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _pytest.mark.structures import ParameterSet

from pop3d.auth.schemes import hash_password
from pop3d.cli import create_data_dir
from pop3d.config import build_config
from pop3d.testing import ServerThread
from tests.clients.corpus import CORPUS, expected_crlf, expected_lf, to_lf
from tests.conftest import not_here
from tests.integration.conftest import (
    ALICE_PASSWORD,
    TlsFiles,
    message_files,
    server,
    tls_files,
    tls_server,
)
from tests.peers.haproxy import PROXY_ADDRESS, Frontends, haproxy
from tests.peers.haproxy import available as haproxy_available
from tests.peers.idp import AUDIENCE, IdentityProvider, identity_provider

__all__ = ["server", "tls_files", "tls_server"]  # fixtures, re-exported for this directory

TRANSPORTS = ("plain", "stls", "tls")
# The user databases of the second pass: the embedded default (its demo user has SCRAM keys),
# passwd-files of {SHA512-CRYPT} and {BLF-CRYPT} hashes (both in each, alice's first), and
# one of {SCRAM-SHA-256} keys.
DATABASES = ("embedded", "sha512-crypt", "blf-crypt", "scram")
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
    peer: str
    events: list[str] = field(default_factory=list)

    @property
    def implicit_tls(self) -> bool:
        return any(re.match(r"connect listener=\S+ tls=implicit$", e) for e in self.events)

    @property
    def starttls(self) -> bool:
        return "starttls" in self.events

    def _login(self) -> re.Match[str] | None:
        return next(
            (m for e in self.events if (m := re.match(r'login user="(.*?)" mechanism=(\S+) ', e))),
            None,
        )

    @property
    def login(self) -> str | None:
        found = self._login()
        return found.group(1) if found else None

    @property
    def mechanism(self) -> str | None:
        found = self._login()
        return found.group(2) if found else None

    @property
    def logout(self) -> dict[str, str]:
        for e in self.events:
            if e.startswith("logout "):
                return dict(kv.split("=", 1) for kv in shlex.split(e)[1:])
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
    user: str = "alice"
    password: str = ALICE_PASSWORD
    database: str | None = None  # one of DATABASES: the client is left on its auth defaults
    token: str | None = None  # an OAuth 2.0 access token for `user` (database "oauth2")
    front: Frontends | None = None  # HAProxy's ports, before two nodes (database "haproxy")

    host = "127.0.0.1"

    @property
    def default_auth(self) -> bool:
        return self.database in DATABASES

    @property
    def port(self) -> int:
        if self.front is not None:
            return self.front.tls if self.transport == "tls" else self.front.plain
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
            m = re.match(r"session=(\d+) peer=(\S+) (.*)$", line)
            if m:
                sid = int(m.group(1))
                by_id.setdefault(sid, Session(sid, m.group(2))).events.append(m.group(3))
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
            if self.front is not None:  # the client HAProxy's header named, not HAProxy
                assert s.peer.startswith("127.0.0.1:"), s.peer
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


def on_defaults(
    transports: Sequence[str] = TRANSPORTS, skip: Sequence[tuple[str, str]] = ()
) -> list[ParameterSet]:
    """`target` parameters of the second pass: every database over each of `transports`."""
    return [
        pytest.param((t, d), id=f"{t}-{d}")
        for d in DATABASES
        for t in transports
        if (t, d) not in skip
    ]


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    transport, database = (
        request.param if isinstance(request.param, tuple) else (request.param, None)
    )
    assert transport in TRANSPORTS, transport
    user, password = "alice", ALICE_PASSWORD
    tls: TlsFiles | None
    token = front = None
    if database == "oauth2":
        srv, tls, token = oauth2_server(tmp_path / "db", request)
    elif database == "haproxy":
        srv, tls, front = haproxy_nodes(tmp_path / "db", request)
    elif database is not None:
        srv, tls, user, password = database_server(database, tmp_path / "db", request)
    elif transport == "plain":
        srv = request.getfixturevalue("server")
        tls = None
    else:
        srv = request.getfixturevalue("tls_server")
        tls = request.getfixturevalue("tls_files")
    for _, data in CORPUS:
        srv.deliver(user, data)
    workdir = tmp_path / "client"
    workdir.mkdir()
    handler = SessionLog()
    logger = logging.getLogger("pop3d.session")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield Target(
            srv, transport, tls, workdir, handler, message_files(srv, user), user, password,
            database, token, front,
        )  # fmt: skip
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        if database is not None and database != "haproxy":
            srv.stop()


def through_haproxy(transports: Sequence[str] = TRANSPORTS) -> list[ParameterSet]:
    """`target` parameters for HAProxy (mode tcp, send-proxy-v2) before two nodes."""
    return [pytest.param((t, "haproxy"), id=f"{t}-haproxy") for t in transports]


def haproxy_nodes(
    root: Path, request: pytest.FixtureRequest
) -> tuple[ServerThread, TlsFiles, Frontends]:
    """Two nodes on the same Maildirs, each taking PROXY headers from HAProxy, and HAProxy
    before them; the first node (for the Maildirs and the log, which both share)."""
    reason = haproxy_available()
    if reason:
        not_here(reason)
    tls = request.getfixturevalue("tls_files")
    config = {
        "server": {
            "listen": ["127.0.0.1:0"],
            "listen_tls": ["127.0.0.1:0"],
            "proxy_networks": [f"{PROXY_ADDRESS}/32"],
            "event_loop": os.environ.get("POP3D_TEST_EVENT_LOOP", "auto"),
        },
        "tls": {"cert": str(tls.cert), "key": str(tls.key)},
    }
    users = {"alice": ALICE_PASSWORD, "bob": "bobpw"}
    nodes = [ServerThread.in_directory(root, users=users, config=config).start() for _ in "ab"]
    for node in nodes:
        request.addfinalizer(node.stop)
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    front = stack.enter_context(haproxy(root, [n.port for n in nodes], [n.tls_port for n in nodes]))
    return nodes[0], tls, front


def oauth2_server(root: Path, request: pytest.FixtureRequest) -> tuple[ServerThread, TlsFiles, str]:
    """A server taking OAuth 2.0 tokens from a local provider, as configured for Keycloak
    (the user is the token's preferred_username), and a token for alice; the mechanisms
    offered are the parameter `mechanisms` of the test, if it has one."""
    provider, ca_file = request.getfixturevalue("identity")
    tls = request.getfixturevalue("tls_files")
    mechanisms = request.node.callspec.params.get("mechanisms")
    config: dict[str, Any] = {
        "server": {
            "listen": ["127.0.0.1:0"],
            "listen_tls": ["127.0.0.1:0"],
            "event_loop": os.environ.get("POP3D_TEST_EVENT_LOOP", "auto"),
        },
        "tls": {"cert": str(tls.cert), "key": str(tls.key)},
        "oauth2": {
            "issuer": provider.issuer,
            "audience": AUDIENCE,
            "username_claim": "preferred_username",
            "jwks": provider.jwks_url,
            "ca_file": str(ca_file),
        },
    }
    if mechanisms:
        config["auth"] = {"mechanisms": list(mechanisms)}
    users = {"alice": ALICE_PASSWORD, "bob": "bobpw"}
    srv = ServerThread.in_directory(root, users=users, config=config).start()
    return srv, tls, provider.token("alice@example.org")


@pytest.fixture
def identity(tmp_path: Path) -> Iterator[tuple[IdentityProvider, Path]]:
    with identity_provider(tmp_path / "idp") as (provider, ca_file):
        provider.add_key("rsa")
        yield provider, ca_file


def database_server(
    database: str, root: Path, request: pytest.FixtureRequest
) -> tuple[ServerThread, TlsFiles, str, str]:
    """A running server for the second pass, its TLS files, and the user and password to
    log in with (alice's; the embedded default's demo user)."""
    assert database in DATABASES, database
    loop = {"event_loop": os.environ.get("POP3D_TEST_EVENT_LOOP", "auto")}
    if database == "embedded":
        password = create_data_dir(root)
        with open(root / "pop3d.toml", "rb") as f:
            data = tomllib.load(f)
        # As `pop3d serve` made it, on free ports.
        data["server"].update(listen=["127.0.0.1:0"], listen_tls=["127.0.0.1:0"], **loop)
        srv = ServerThread(build_config(data, root))
        for name in message_files(srv, "demo"):  # the welcome message: the corpus instead
            for sub in ("new", "cur"):
                (srv.maildir("demo") / sub / name).unlink(missing_ok=True)
        cert = root / "tls" / "cert.pem"
        tls = TlsFiles(None, cert, cert, root / "tls" / "key.pem")  # self-signed: its own CA
        return srv.start(), tls, "demo", password
    tls = request.getfixturevalue("tls_files")
    schemes = {
        "sha512-crypt": ("SHA512-CRYPT", "BLF-CRYPT"),
        "blf-crypt": ("BLF-CRYPT", "SHA512-CRYPT"),
        "scram": ("SCRAM-SHA-256", "SCRAM-SHA-256"),
    }[database]
    users = {
        "alice": hash_password(schemes[0], ALICE_PASSWORD.encode()),
        "bob": hash_password(schemes[1], b"bobpw"),
    }
    config = {
        "server": {"listen": ["127.0.0.1:0"], "listen_tls": ["127.0.0.1:0"], **loop},
        "tls": {"cert": str(tls.cert), "key": str(tls.key)},
    }
    srv = ServerThread.in_directory(root, users=users, config=config)
    return srv.start(), tls, "alice", ALICE_PASSWORD


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
