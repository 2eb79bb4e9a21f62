"""Shared test settings: programs a test needs are either present or the test says why not."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=300, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def not_here(reason: str) -> NoReturn:
    """Skip a test that this machine cannot run; under CI=true, fail it: CI must run them all."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require_program(name: str) -> str:
    """The path of `name`; skips the test if it is missing, fails it under CI=true."""
    path = shutil.which(name)
    if path is None:
        not_here(f"{name} is not installed (`.ci/run` installs it)")
    return path


SERVICE_ACCOUNT = "pop3d-test"


def service_account() -> str | None:
    """The account a test gives `[server] user` when it runs as root (as CI does): pop3d
    refuses to serve as root. Made (a system account, no home, no shell) if missing. None
    when the tests do not run as root: pop3d then serves as whoever runs them."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVICE_ACCOUNT],
            check=True, capture_output=True,
        )  # fmt: skip
    return SERVICE_ACCOUNT


def hand_over(root: Path, account: str | None) -> None:
    """Let `account` serve from `root`: own everything below it, and pass through the
    directories above it (pytest makes its temporary directories 0700)."""
    if account is None:
        return
    entry = pwd.getpwnam(account)
    for parent in root.parents:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o011)
    for path in [root, *root.rglob("*")]:
        os.lchown(path, entry.pw_uid, entry.pw_gid)


@pytest.fixture(scope="session")
def postgresql_cluster():  # type: ignore[no-untyped-def]
    """One PostgreSQL for the whole run (tests/peers/postgres.py)."""
    from tests.peers import postgres  # noqa: PLC0415

    if postgres.binaries() is None:
        not_here("PostgreSQL is not installed (Debian package postgresql)")
    with postgres.cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(postgresql_cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A new, empty database of that PostgreSQL, for one test; its conninfo."""
    name = postgresql_cluster.new_database()
    yield postgresql_cluster.dsn(name)
    postgresql_cluster.drop_database(name)
