"""Several pop3d nodes over one PostgreSQL: the RFC 1939 lock holds across them, a node that
dies frees its users within lease_ttl, and one that froze while its lease was taken over
deletes nothing when it wakes. The nodes are real processes; PostgreSQL is Debian's."""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import signal
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pop3d.config import PostgresConfig
from pop3d.postgres import database_in_thread
from pop3d.principal import Principal
from pop3d.quota import Quota
from pop3d.store.postgresql import PostgresStore
from tests.conftest import not_here
from tests.integration.conftest import LineClient, ServerProcess, write_config
from tests.peers.haproxy import PROXY_ADDRESS, haproxy
from tests.peers.haproxy import available as haproxy_available
from tests.peers.postgres import pgbouncer

LEASE_TTL = 3
USERS = [f"user{i}" for i in range(10)]


def pop3d(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pop3d", *args], input=stdin,
                          capture_output=True, timeout=60)  # fmt: skip


def node_config(
    root: Path, dsn: str, extra: str = "", server: str = "", **postgresql: object
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    settings = {"dsn": dsn, "lease_ttl": LEASE_TTL, **postgresql}
    section = "".join(
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, str) else v}\n"
        for k, v in settings.items()
    ).replace("'", '"')
    return write_config(
        root, {}, "[store]\nbackend = \"postgresql\"\n[postgresql]\n" + section + extra,
        server=server, auth='backend = "postgresql"\nfailure_delay = 0\n',
    )  # fmt: skip


@dataclass
class Cluster:
    dsn: str  # what the nodes connect to: PostgreSQL, or PgBouncer in front of it
    root: Path
    mail: PostgresStore  # to put mail in and look, as LMTP on another node would
    nodes: list[ServerProcess] = field(default_factory=list)
    postgresql: dict[str, object] = field(default_factory=dict)  # more [postgresql] keys

    def node(self, extra: str = "", server: str = "", **postgresql: object) -> ServerProcess:
        root = self.root / f"node{len(self.nodes)}"
        settings = {**self.postgresql, **postgresql}
        config = node_config(root, self.dsn, extra, server, **settings)
        node = ServerProcess(config)
        self.nodes.append(node)
        return node

    def deliver(self, user: str, count: int) -> None:
        for i in range(count):
            self.mail.deliver(Principal(user), [b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i)],
                              Quota())  # fmt: skip

    def uidls(self, user: str) -> list[str]:
        """The user's messages in the database now, as pop3d names them."""

        async def listing(conn: Any) -> list[str]:
            cur = await conn.execute(
                "SELECT m.uid, b.uidvalidity FROM pop3d_messages m JOIN pop3d_mailboxes b "
                "ON b.id = m.mailbox WHERE b.name = %s ORDER BY m.uid", (user,))  # fmt: skip
            return [f"{uid:08x}{uv:08x}" for uid, uv in await cur.fetchall()]

        return self.mail.db.run_blocking(listing)


@pytest.fixture
def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, pg_dsn: str, postgresql_cluster: Any
) -> Iterator[Cluster]:
    """The database ready and ten users in it; nodes are started by the test. With the
    parameter "pgbouncer", the nodes go through PgBouncer in transaction pooling mode (no
    prepared statements, no startup options: statement_timeout = 0)."""
    via = getattr(request, "param", "direct")
    config = node_config(tmp_path / "admin", pg_dsn)
    init = pop3d("db", "init", "--config", str(config))
    assert init.returncode == 0, init.stderr
    assert init.stdout == b"schema at version 1 (applied 1)\n"
    assert pop3d("db", "init", "--config", str(config)).stdout == (
        b"schema at version 1 (nothing to do)\n"
    )
    for user in USERS:
        added = pop3d("user", "add", "--config", str(config), user, "--scheme", "SCRAM-SHA-256",
                      "--password-stdin", stdin=f"{user}-pw\n".encode())  # fmt: skip
        assert added.returncode == 0, added.stderr
    with contextlib.ExitStack() as stack:
        db = stack.enter_context(
            database_in_thread(PostgresConfig(dsn=pg_dsn, lease_ttl=LEASE_TTL))
        )
        found = Cluster(pg_dsn, tmp_path, PostgresStore(db, LEASE_TTL))
        if via == "pgbouncer":
            port = stack.enter_context(pgbouncer(postgresql_cluster))
            found.dsn = re.sub(r"port=\d+", f"port={port}", pg_dsn)
            found.postgresql = {"prepared_statements": False, "statement_timeout": 0}
        try:
            yield found
        finally:
            for node in found.nodes:
                node.stop()


def login(port: int, user: str) -> tuple[LineClient, bytes]:
    client = LineClient(port)
    client.read_line()
    client.command(f"USER {user}")
    return client, client.command(f"PASS {user}-pw")


BOTH = pytest.mark.parametrize("cluster", ["direct", "pgbouncer"], indirect=True)


@BOTH
def test_two_nodes_one_lock(cluster: Cluster) -> None:
    cluster.deliver("user0", 3)
    a, b = cluster.node(), cluster.node()
    first, reply = login(a.port, "user0")
    assert reply == b"+OK Logged in, 3 messages (66 octets).\r\n"
    assert login(b.port, "user0")[1] == b"-ERR [IN-USE] Maildrop is in use by another session.\r\n"
    assert login(a.port, "user0")[1].startswith(b"-ERR [IN-USE]")
    assert login(b.port, "user1")[1].startswith(b"+OK Logged in")  # others are free
    assert first.command("DELE 1").startswith(b"+OK")
    assert first.command("QUIT") == b"+OK Logging out, 1 message deleted.\r\n"
    second, reply = login(b.port, "user0")  # released at once, on the other node too
    assert reply == b"+OK Logged in, 2 messages (44 octets).\r\n"
    second.send(b"UIDL\r\n")
    uidl = second.read_multiline()
    assert re.fullmatch(rb"\+OK\r\n1 00000002[0-9a-f]{8}\r\n2 00000003[0-9a-f]{8}\r\n\.\r\n", uidl)
    second.send(b"RETR 2\r\n")
    assert second.read_multiline() == b"+OK 22 octets\r\nSubject: 2\r\n\r\nbody 2\r\n.\r\n"
    second.command("QUIT")


@BOTH
def test_a_killed_node_frees_its_users_within_lease_ttl(cluster: Cluster) -> None:
    cluster.deliver("user0", 3)
    a, b = cluster.node(), cluster.node()
    client, reply = login(a.port, "user0")
    assert reply.startswith(b"+OK")
    client.command("DELE 1")
    client.command("DELE 2")
    a.proc.send_signal(signal.SIGKILL)
    a.wait_gone()
    killed = time.monotonic()
    while True:
        session, reply = login(b.port, "user0")
        if reply.startswith(b"+OK"):
            break
        assert reply.startswith(b"-ERR [IN-USE]")
        assert time.monotonic() - killed < LEASE_TTL + 2
        time.sleep(0.2)
    assert time.monotonic() - killed <= LEASE_TTL + 2
    assert reply == b"+OK Logged in, 3 messages (66 octets).\r\n"  # nothing was deleted
    session.command("QUIT")


@BOTH
def test_a_frozen_node_whose_lease_was_taken_over_deletes_nothing(cluster: Cluster) -> None:
    cluster.deliver("user0", 3)
    a, b = cluster.node(), cluster.node()
    frozen, reply = login(a.port, "user0")
    assert reply.startswith(b"+OK Logged in, 3 messages")
    assert frozen.command("DELE 1").startswith(b"+OK")
    assert frozen.command("DELE 2").startswith(b"+OK")
    before = cluster.uidls("user0")
    (worker,) = a.workers
    for pid in (a.proc.pid, worker):
        subprocess.run(["kill", "-STOP", str(pid)], check=True)  # a long pause, a partition
    try:
        time.sleep(LEASE_TTL + 1)
        other, reply = login(b.port, "user0")  # the lease expired: B takes it over
        assert reply == b"+OK Logged in, 3 messages (66 octets).\r\n"
        assert other.command("DELE 3").startswith(b"+OK")
        assert other.command("QUIT") == b"+OK Logging out, 1 message deleted.\r\n"
    finally:
        for pid in (a.proc.pid, worker):
            subprocess.run(["kill", "-CONT", str(pid)], check=True)
    frozen.send(b"QUIT\r\n")
    answer = frozen.read_line()
    assert answer.startswith(b"-ERR [SYS/TEMP]"), answer
    assert cluster.uidls("user0") == before[:2]  # A's DELE 1 and 2 never happened
    deadline = time.monotonic() + 5
    while "the lease of mailbox user0 was lost" not in "".join(a.log):
        assert time.monotonic() < deadline, "".join(a.log)[-3000:]
        time.sleep(0.1)


def test_database_down_at_login_and_for_lmtp(cluster: Cluster, postgresql_cluster) -> None:  # type: ignore[no-untyped-def]
    node = cluster.node('[lmtp]\nlisten = ["127.0.0.1:0"]\n', connect_timeout=1)
    assert login(node.port, "user1")[1].startswith(b"+OK")
    dbname = re.search(r"dbname=(\S+)", cluster.dsn)
    assert dbname
    postgresql_cluster.sql(f"ALTER DATABASE {dbname.group(1)} WITH ALLOW_CONNECTIONS false")
    postgresql_cluster.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
        f"'{dbname.group(1)}' AND pid <> pg_backend_pid()"
    )
    try:
        _client, reply = login(node.port, "user2")
        assert reply == b"-ERR [SYS/TEMP] Authentication is unavailable now.\r\n"
        lmtp = smtplib.LMTP("127.0.0.1", node.ports["LMTP"], timeout=20)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            lmtp.sendmail("s@example.net", ["user2"], b"Subject: x\r\n\r\ny\r\n")
        code, text = refused.value.recipients["user2"]
        assert (code, text[:5]) == (451, b"4.3.0")
        lmtp.close()
        deliver = pop3d("deliver", "--config", str(node.config), "user2",
                        stdin=b"Subject: x\n\ny\n")  # fmt: skip
        assert deliver.returncode == 75  # EX_TEMPFAIL: the MTA keeps it and retries
    finally:
        postgresql_cluster.sql(f"ALTER DATABASE {dbname.group(1)} WITH ALLOW_CONNECTIONS true")
    deadline = time.monotonic() + 20
    while not login(node.port, "user2")[1].startswith(b"+OK"):  # back by itself
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert node.proc.poll() is None


def test_a_dropped_database_connection_mid_retr_ends_that_session_cleanly(
    cluster: Cluster,
    postgresql_cluster,  # type: ignore[no-untyped-def]
) -> None:
    body = b"Subject: big\r\n\r\n" + b"0123456789" * 1_000_000  # 10 MB: 40 chunks
    cluster.mail.deliver(Principal("user3"), [body], Quota())
    node = cluster.node()
    client, reply = login(node.port, "user3")
    assert reply.startswith(b"+OK")
    client.send(b"RETR 1\r\n")
    assert client.read_line().startswith(b"+OK")
    client.read_exactly(100_000)  # under way
    dbname = re.search(r"dbname=(\S+)", cluster.dsn)
    assert dbname
    postgresql_cluster.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
        f"'{dbname.group(1)}' AND pid <> pg_backend_pid()"
    )
    with contextlib.suppress(OSError):
        rest = client.read_until_closed()
        assert not rest.endswith(b"\r\n.\r\n")  # cut off, never a false end
    _, reply = login(node.port, "user3")  # the lease was released (or it expires)
    deadline = time.monotonic() + LEASE_TTL + 5
    while not reply.startswith(b"+OK"):
        assert time.monotonic() < deadline, reply
        time.sleep(0.3)
        _again, reply = login(node.port, "user3")
    assert reply.startswith(b"+OK Logged in, 1 message")
    assert node.proc.poll() is None


@dataclass
class Held:
    user: str
    start: float
    end: float = 0.0


def test_stress_two_nodes_twenty_clients_ten_users(cluster: Cluster) -> None:
    """30 s of random sessions on two nodes of two workers each. Afterwards every message is
    there unless a QUIT that was answered +OK deleted it, and no two sessions ever held one
    maildrop at once (each client notes when it held one, from its +OK to its QUIT or drop)."""
    for user in USERS:
        cluster.deliver(user, 10)
    everything = {u for user in USERS for u in cluster.uidls(user)}
    nodes = [cluster.node(server="workers = 2\n") for _ in range(2)]
    ports = [n.port for n in nodes]
    stop = time.monotonic() + 30
    held: list[Held] = []
    committed: set[str] = set()  # uids a QUIT answered +OK deleted
    maybe: set[str] = set()  # uids of a QUIT whose answer was lost
    lock = threading.Lock()
    errors: list[str] = []

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < stop:
            user = rng.choice(USERS)
            try:
                conn, reply = login(rng.choice(ports), user)
            except OSError as exc:
                errors.append(f"connect: {exc}")
                continue
            if not reply.startswith(b"+OK"):
                if not reply.startswith(b"-ERR [IN-USE]"):
                    errors.append(repr(reply))
                conn.close()
                continue
            span = Held(user, time.monotonic())
            conn.send(b"UIDL\r\n")
            listing = conn.read_multiline().split(b"\r\n")[1:-2]
            uids = {int(n): u.decode() for n, u in (line.split() for line in listing)}
            marked = []
            for _ in range(rng.randint(0, 4)):
                unmarked = [n for n in uids if n not in marked]
                if not unmarked:
                    break
                n = rng.choice(unmarked)
                if rng.random() < 0.5:
                    conn.send(b"RETR %d\r\n" % n)
                    answer = conn.read_line()
                    if answer.startswith(b"+OK"):
                        while conn.read_line() != b".\r\n":
                            pass
                    else:
                        errors.append(f"RETR: {answer!r}")
                elif conn.command(f"DELE {n}").startswith(b"+OK"):
                    marked.append(n)
            ending = rng.random()
            if ending < 0.7:
                span.end = time.monotonic()
                conn.send(b"QUIT\r\n")
                try:
                    answer = conn.read_line()
                except (OSError, EOFError):
                    answer = b""
                with lock:
                    target = committed if answer.startswith(b"+OK") else maybe
                    target.update(uids[n] for n in marked)
                    if answer and not answer.startswith(b"+OK"):
                        errors.append(f"QUIT: {answer!r}")
            else:
                span.end = time.monotonic()
                conn.close()  # dropped: nothing it marked may go
            with lock:
                held.append(span)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert len(held) > 100, len(held)
    left = {u for user in USERS for u in cluster.uidls(user)}
    assert left.isdisjoint(committed), "a committed deletion did not happen"
    assert everything - committed - maybe <= left, "a message went without a committed QUIT"
    by_user: dict[str, list[Held]] = {}
    for span in held:
        by_user.setdefault(span.user, []).append(span)
    for user, spans in by_user.items():
        spans.sort(key=lambda s: s.start)
        for before, after in itertools.pairwise(spans):
            assert after.start >= before.end, f"{user} held twice at once"


@BOTH
def test_two_nodes_behind_haproxy(cluster: Cluster, tmp_path: Path) -> None:
    """HAProxy (mode tcp, send-proxy-v2, round robin) before two nodes: the lock holds
    whichever node a client lands on, and each node logs the client, not the proxy."""
    reason = haproxy_available()
    if reason:
        not_here(reason)
    cluster.deliver("user0", 2)
    proxy = f'proxy_networks = ["{PROXY_ADDRESS}/32"]\n'
    a, b = cluster.node(server=proxy), cluster.node(server=proxy)
    with haproxy(tmp_path, [a.port, b.port]) as front:
        first, reply = login(front.plain, "user0")
        assert reply == b"+OK Logged in, 2 messages (44 octets).\r\n"
        for _ in range(4):  # round robin: both nodes are asked
            assert login(front.plain, "user0")[1].startswith(b"-ERR [IN-USE]")
        first.command("QUIT")
        session, reply = login(front.plain, "user0")
        assert reply.startswith(b"+OK Logged in, 2 messages")
        session.command("QUIT")
    for node in (a, b):
        log = "".join(node.log)
        assert re.search(r"session=\d+ peer=127\.0\.0\.1:\d+ login", log), log
        assert f"peer={PROXY_ADDRESS}" not in log
