"""PostgreSQL from Debian's packages, started by the tests: one cluster (initdb, pg_ctl) in a
temporary directory, as an unprivileged account (PostgreSQL refuses to run as root, and CI
runs as root), shared by every test of a run; a new database per test. PgBouncer (transaction
pooling) in front of it on request.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import free_port, running

ROLE = "pop3d"


def binaries() -> Path | None:
    """Debian's PostgreSQL programs, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _account() -> str | None:
    """Whom to run PostgreSQL as: ourselves, or (as root) the postgres account."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres").pw_name
    except KeyError:
        from tests.conftest import service_account  # noqa: PLC0415

        return service_account()


def _run(argv: list[str], user: str | None, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, user=user, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload,no-any-return]


@dataclass
class Cluster:
    root: Path
    port: int
    user: str | None
    bin: Path
    _names = itertools.count(1)

    def dsn(self, database: str = "postgres", port: int | None = None) -> str:
        return f"host=127.0.0.1 port={port or self.port} dbname={database} user={ROLE}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        return _run(
            [str(self.bin / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d",
             self.dsn(database), "-c", statement],
            None,
        ).stdout  # fmt: skip

    def new_database(self) -> str:
        name = f"t{os.getpid()}_{next(self._names)}"
        self.sql(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @property
    def pid(self) -> int:
        """The postmaster's: every backend is its child."""
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
            user=self.user, capture_output=True, check=False,
        )  # fmt: skip


@contextmanager
def cluster(durable: bool = False) -> Iterator[Cluster]:
    """A new PostgreSQL; unless `durable`, without fsync (tests need no crash safety)."""
    bin_dir = binaries()
    assert bin_dir is not None, "PostgreSQL is not installed (Debian package postgresql)"
    user = _account()
    root = Path(tempfile.mkdtemp(prefix="pop3d-pg-"))
    root.chmod(0o755)
    if user is not None:
        shutil.chown(root, user)
    port = free_port()
    data = root / "data"
    _run([str(bin_dir / "initdb"), "-D", str(data), "-U", ROLE, "-A", "trust", "-E", "UTF8",
          "--no-sync"], user)  # fmt: skip
    options = f"-p {port} -h 127.0.0.1 -k {root} -c max_connections=300 -c shared_buffers=128MB"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"),
          "-w", "start"], user, timeout=60)  # fmt: skip
    found = Cluster(root, port, user, bin_dir)
    try:
        yield found
    finally:
        found.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def pgbouncer(pg: Cluster) -> Iterator[int]:
    """PgBouncer in transaction pooling mode in front of `pg`; its port. Any database."""
    program = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    port = free_port()
    config = pg.root / f"pgbouncer-{port}.ini"
    config.write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={pg.port} user={ROLE}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\nmax_client_conn = 500\n"
        "default_pool_size = 20\nignore_startup_parameters = extra_float_digits\n"
        f"logfile = {pg.root / f'pgbouncer-{port}.log'}\n"
    )
    if pg.user is not None:
        shutil.chown(config, pg.user)
    proc = subprocess.Popen(
        [program, str(config)], user=pg.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    probe = [str(pg.bin / "psql"), "-X", "-At", "-d", pg.dsn("postgres", port), "-c", "SELECT 1"]
    with running(proc, lambda: _run(probe, None), 30):
        yield port
