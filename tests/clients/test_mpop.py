"""mpop, delivering into a Maildir, in keep mode and in delete mode, over every transport.

`received_header off` stops mpop's Received: header, so nothing is stripped; mpop's Maildir
delivery turns CRLF into LF, which the comparison allows. mpop pipelines its commands.
"""

from __future__ import annotations

import pytest

from tests.clients.conftest import TRANSPORTS, Target, assert_mailbox, read_dir
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
        "auth user\n"
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
