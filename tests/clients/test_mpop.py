"""mpop, delivering into a Maildir, in keep mode and in delete mode, over every transport;
then on its own defaults (`auth on`: the best mechanism the server offers that mpop has;
on a plain link, `tls off`, only one that does not send the password).

`received_header off` stops mpop's Received: header, so nothing is stripped; mpop's Maildir
delivery turns CRLF into LF, which the comparison allows. mpop pipelines its commands.
"""

from __future__ import annotations

import pytest

from tests.clients.conftest import (
    TRANSPORTS,
    Target,
    assert_mailbox,
    on_defaults,
    read_dir,
    through_haproxy,
)
from tests.conftest import require_program


def mpop(target: Target, *, keep: bool) -> list[bytes]:
    exe = require_program("mpop")
    maildir = target.workdir / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    if target.transport == "plain":
        tls = "tls off\n"
    else:
        tls = (
            "tls on\n"
            f"tls_starttls {'on' if target.transport == 'stls' else 'off'}\n"
            f"tls_trust_file {target.ca_file}\n"
        )
    rc = target.workdir / "mpoprc"
    rc.write_text(
        "account test\n"
        f"host {target.host}\n"
        f"port {target.port}\n"
        f"user {target.user}\n"
        f'password "{target.password}"\n'
        f"{'' if target.default_auth else 'auth user' + chr(10)}"
        f"{tls}"
        "timeout 20\n"
        "received_header off\n"
        f"keep {'on' if keep else 'off'}\n"
        "only_new off\n"
        f"uidls_file {target.workdir / 'uidls'}\n"
        f"delivery maildir {maildir}\n"
    )
    rc.chmod(0o600)
    target.run([exe, "--quiet", "-C", str(rc), "test"])
    assert read_dir(maildir / "tmp") == []
    return read_dir(maildir / "new") + read_dir(maildir / "cur")


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
def test_mpop_keep(target: Target) -> None:
    assert_mailbox(mpop(target, keep=True), f"mpop (keep) over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
def test_mpop_delete(target: Target) -> None:
    assert_mailbox(mpop(target, keep=False), f"mpop (delete) over {target.transport}")
    target.assert_emptied()


CRYPT_ON_PLAIN = [("plain", "sha512-crypt"), ("plain", "blf-crypt")]


@pytest.mark.parametrize("target", on_defaults(skip=CRYPT_ON_PLAIN), indirect=True)
def test_mpop_on_its_defaults(target: Target) -> None:
    assert_mailbox(mpop(target, keep=True), f"mpop (auth on) over {target.transport}")
    target.assert_unchanged()
    if target.transport == "plain":
        # tls off: mpop sends no password in the clear, and the server offered SCRAM only
        # because every user of the database can complete it.
        assert {s.mechanism for s in target.assert_sessions()} == {"SCRAM-SHA-256"}


@pytest.mark.parametrize("target", [pytest.param(t, id="-".join(t)) for t in CRYPT_ON_PLAIN],
                         indirect=True)  # fmt: skip
def test_mpop_on_a_plain_link_to_crypt_hashes_says_why_it_stops(target: Target) -> None:
    """No mechanism the server can complete keeps the password off a plain link: it offers
    none (rather than a SCRAM that would fail), and mpop stops on its own before sending
    the password."""
    exe = require_program("mpop")
    rc = target.workdir / "mpoprc"
    rc.write_text(
        f"account test\nhost {target.host}\nport {target.port}\nuser {target.user}\n"
        f'password "{target.password}"\ntls off\ntimeout 20\n'
        f"delivery maildir {target.workdir}\n"
    )
    rc.chmod(0o600)
    result = target.run([exe, "--quiet", "-C", str(rc), "test"], ok=range(1, 256))
    assert b"cannot use a secure authentication method" in result.stderr, result.stderr
    assert [s for s in target.sessions() if s.login] == []
    assert not any("mechanism=SCRAM" in line for line in target.log.lines)


@pytest.mark.parametrize("target", through_haproxy(), indirect=True)
def test_mpop_through_haproxy(target: Target) -> None:
    assert_mailbox(mpop(target, keep=True), f"mpop through HAProxy over {target.transport}")
    target.assert_unchanged()
