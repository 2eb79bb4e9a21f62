"""OAuth 2.0 bearer tokens from real clients: curl's `--oauth2-bearer` (OAUTHBEARER when the
server offers it, else XOAUTH2) and mpop's `auth oauthbearer` / `auth xoauth2` with
`passwordeval` printing the token, against a local identity provider (tests/peers/idp.py)."""

from __future__ import annotations

import pytest

from tests.clients.conftest import Target, assert_mailbox, read_dir
from tests.clients.corpus import CORPUS
from tests.clients.test_curl import url
from tests.conftest import require_program

TARGETS = [pytest.param((t, "oauth2"), id=t) for t in ("stls", "tls")]
MECHANISMS = {"OAUTHBEARER": ["PLAIN", "OAUTHBEARER", "XOAUTH2"], "XOAUTH2": ["PLAIN", "XOAUTH2"]}


@pytest.mark.parametrize("mechanisms", MECHANISMS.values(), ids=MECHANISMS.keys())
@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_curl_with_a_bearer_token(target: Target, mechanisms: list[str]) -> None:
    assert target.token is not None
    curl = require_program("curl")
    out = target.workdir / "fetched"
    out.mkdir()
    n = len(CORPUS)
    argv = [curl, "-sS", "--max-time", "20", "--cacert", target.ca_file, "-u", f"{target.user}:",
            "--oauth2-bearer", target.token, url(target, f"[1-{n}]"), "-o", f"{out}/#1"]  # fmt: skip
    if target.transport == "stls":
        argv.insert(1, "--ssl-reqd")
    target.run(argv)
    assert_mailbox([(out / str(i)).read_bytes() for i in range(1, n + 1)], "curl (bearer)")
    target.assert_unchanged()
    expected = "OAUTHBEARER" if "OAUTHBEARER" in mechanisms else "XOAUTH2"
    assert {s.mechanism for s in target.assert_sessions()} == {expected}


@pytest.mark.parametrize("mechanism", ["oauthbearer", "xoauth2"])
@pytest.mark.parametrize("target", TARGETS, indirect=True)
def test_mpop_with_a_bearer_token(target: Target, mechanism: str) -> None:
    assert target.token is not None
    mpop = require_program("mpop")
    token = target.workdir / "token"
    token.write_text(target.token + "\n")
    maildir = target.workdir / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    rc = target.workdir / "mpoprc"
    rc.write_text(
        f"account test\nhost {target.host}\nport {target.port}\nuser {target.user}\n"
        f"auth {mechanism}\npasswordeval cat {token}\ntls on\n"
        f"tls_starttls {'on' if target.transport == 'stls' else 'off'}\n"
        f"tls_trust_file {target.ca_file}\ntimeout 20\nreceived_header off\nkeep on\n"
        f"only_new off\nuidls_file {target.workdir / 'uidls'}\ndelivery maildir {maildir}\n"
    )
    rc.chmod(0o600)
    target.run([mpop, "--quiet", "-C", str(rc), "test"])
    assert_mailbox(read_dir(maildir / "new") + read_dir(maildir / "cur"), f"mpop ({mechanism})")
    target.assert_unchanged()
    assert {s.mechanism for s in target.assert_sessions()} == {mechanism.upper()}


@pytest.mark.parametrize("target", TARGETS[1:], indirect=True)
def test_curl_with_a_bad_token_fails_cleanly(target: Target) -> None:
    curl = require_program("curl")
    result = target.run(
        [curl, "-sS", "--max-time", "20", "--cacert", target.ca_file, "-u", f"{target.user}:",
         "--oauth2-bearer", "not.a.token", url(target)],
        ok=range(1, 256),
    )  # fmt: skip
    assert b"Authentication failed" in result.stderr or result.returncode == 67, result
    assert [s for s in target.sessions() if s.login] == []
