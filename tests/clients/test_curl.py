"""curl's POP3 support: LIST, RETR of every message on one reused connection, and DELE.

curl is given no `--login-options`, so it always picks the mechanism itself (Debian's curl
has no SCRAM: PLAIN, or USER/PASS). curl writes a retrieved message as it came (CRLF line ends), with the byte-stuffing undone:
the files must be the messages exactly, before any line-end normalisation.
"""

from __future__ import annotations

import pytest

from tests.clients.conftest import (
    TRANSPORTS,
    Target,
    assert_mailbox,
    expected_sizes,
    on_defaults,
    through_haproxy,
)
from tests.clients.corpus import CORPUS, expected_crlf
from tests.conftest import require_program


def url(target: Target, path: str = "") -> str:
    scheme = "pop3s" if target.transport == "tls" else "pop3"
    return f"{scheme}://{target.host}:{target.port}/{path}"


def options(target: Target) -> list[str]:
    opts = ["-sS", "--max-time", "20", "-u", f"{target.user}:{target.password}"]
    if target.transport != "plain":
        opts += ["--cacert", target.ca_file]
    if target.transport == "stls":
        opts += ["--ssl-reqd"]  # STLS, and fail rather than go on in cleartext
    return opts


def curl(target: Target, *args: str) -> bytes:
    return target.run([require_program("curl"), *args]).stdout


def fetch_all(target: Target, *, delete: bool) -> list[bytes]:
    n = len(CORPUS)
    out = target.workdir / "fetched"
    out.mkdir()
    every = url(target, f"[1-{n}]")
    # One curl run, one connection (curl reuses it for every URL of the run): the listing,
    # each RETR into its own file, then (after --next, on the same connection) a DELE of each.
    argv = [*options(target), url(target), "-o", str(out / "LIST"), every, "-o", f"{out}/#1"]
    if delete:
        argv += ["--next", *options(target), "-X", "DELE", "-I", every]
    curl(target, *argv)
    listing = (out / "LIST").read_bytes()
    assert listing == "".join(f"{i} {s}\r\n" for i, s in enumerate(expected_sizes(), 1)).encode()
    assert len(target.assert_sessions()) == 1
    return [(out / str(i)).read_bytes() for i in range(1, n + 1)]


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
def test_curl_keep(target: Target) -> None:
    got = fetch_all(target, delete=False)
    # No normalisation needed: curl hands over the CRLF octets themselves.
    for (name, data), message in zip(CORPUS, got, strict=True):
        assert message == expected_crlf(data), name
    assert_mailbox(got, f"curl over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
def test_curl_delete(target: Target) -> None:
    assert_mailbox(fetch_all(target, delete=True), f"curl over {target.transport}")
    target.assert_emptied()


@pytest.mark.parametrize("target", on_defaults(), indirect=True)
def test_curl_on_its_defaults(target: Target) -> None:
    assert_mailbox(fetch_all(target, delete=False), f"curl over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", through_haproxy(), indirect=True)
def test_curl_through_haproxy(target: Target) -> None:
    assert_mailbox(fetch_all(target, delete=False), f"curl through HAProxy, {target.transport}")
    target.assert_unchanged()
