"""getmail6 (Debian's getmail6, the `getmail` command), in keep mode and in delete mode.

Transports: plain (SimplePOP3Retriever) and implicit TLS (SimplePOP3SSLRetriever, which
checks the certificate against `ca_certs` and the host name). getmail6 has no STLS for
POP3 (its POP3 retrievers are plain or implicit TLS only), so there is no STLS test.

What getmail adds: `delivered_to = false` and `received = false` stop the Delivered-To: and
Received: headers, but getmail always puts a `Return-Path: <sender>` line first (Message.
flatten in getmailcore/message.py, not configurable), the sender taken from the message's
own Return-Path: or Sender: header, which no corpus message has, so `<unknown>`. That one
line is checked and stripped. getmail also re-generates the header through Python's email
package, which can refold header lines longer than 78 characters: the corpus has none.

Delivery goes to an external MDA that writes each message to a file: getmail's Maildir
destination refuses to deliver as root ("refuse to deliver mail as root"), and CI runs as
root; MDA_external with `allow_root_commands` gets the same flattened message.
"""

from __future__ import annotations

import pytest

from tests.clients.conftest import Target, assert_mailbox, on_defaults, read_dir, through_haproxy
from tests.conftest import require_program

GETMAIL_RETURN_PATH = b"Return-Path: <unknown>\n"


def getmail(target: Target, *, delete: bool) -> list[bytes]:
    exe = require_program("getmail")
    out = target.workdir / "fetched"
    out.mkdir()
    state = target.workdir / "getmail"
    state.mkdir()
    mda = target.workdir / "deliver"
    mda.write_text(f'#!/bin/sh\nexec cat > "$(mktemp -p {out} msg.XXXXXX)"\n')
    mda.chmod(0o700)
    if target.transport == "tls":
        retriever = f"type = SimplePOP3SSLRetriever\nca_certs = {target.ca_file}\n"
    else:
        retriever = "type = SimplePOP3Retriever\n"
    rc = target.workdir / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        f"{retriever}"
        f"server = {target.host}\n"
        f"port = {target.port}\n"
        f"username = {target.user}\n"
        f"password = {target.password}\n"
        "timeout = 20\n"
        "[destination]\n"
        "type = MDA_external\n"
        f"path = {mda}\n"
        "allow_root_commands = true\n"
        "[options]\n"
        "read_all = true\n"
        f"delete = {'true' if delete else 'false'}\n"
        "delivered_to = false\n"
        "received = false\n"
        "message_log_syslog = false\n"
    )
    target.run([exe, "--getmaildir", str(state), "--rcfile", str(rc), "--quiet"])
    messages = read_dir(out)
    for m in messages:
        assert m.startswith(GETMAIL_RETURN_PATH), m[:200]
    return [m[len(GETMAIL_RETURN_PATH) :] for m in messages]


@pytest.mark.parametrize("target", ["plain", "tls"], indirect=True)
def test_getmail_keep(target: Target) -> None:
    assert_mailbox(getmail(target, delete=False), f"getmail (keep) over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", ["plain", "tls"], indirect=True)
def test_getmail_delete(target: Target) -> None:
    assert_mailbox(getmail(target, delete=True), f"getmail (delete) over {target.transport}")
    target.assert_emptied()


@pytest.mark.parametrize("target", on_defaults(("plain", "tls")), indirect=True)
def test_getmail_on_its_defaults(target: Target) -> None:
    # getmail's POP3 retrievers log in with USER/PASS (APOP only when told to): its defaults.
    assert_mailbox(getmail(target, delete=False), f"getmail over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", through_haproxy(("plain", "tls")), indirect=True)
def test_getmail_through_haproxy(target: Target) -> None:
    assert_mailbox(getmail(target, delete=False), f"getmail through HAProxy, {target.transport}")
    target.assert_unchanged()
