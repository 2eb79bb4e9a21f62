"""fetchmail, in keep mode and in delete mode, over every transport.

Its rc file names no `auth`, so fetchmail always picks on its own (`auth any`): USER/PASS
here, as it has no SCRAM. Each message goes to an MDA that writes it to its own file. `set invisible` stops fetchmail
adding its Received: header and `no rewrite` stops it rewriting addresses, so nothing is
stripped from what it delivers (it turns CRLF into LF, which the comparison allows).
"""

from __future__ import annotations

import hashlib
import ssl

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

# fetchmail reads a body line into a buffer of MSGBUFSIZE (8192) octets: a longer line is cut
# after 8191 octets, and fetchmail passes on its NUL terminator, one uninitialised octet and
# a LF of its own, then goes on with the rest of the line as a new line ("guard against very
# long lines" in fetchmail's transact.c; seen with 6.4.37). Every octet the server sent still
# arrives, in order: `rejoin_long_lines` removes exactly those three octets at each cut.
FETCHMAIL_LINE = 8191


def rejoin_long_lines(message: bytes) -> bytes:
    lines = message.split(b"\n")
    out: list[bytes] = []
    carry = b""
    for line in lines:
        if len(line) == FETCHMAIL_LINE + 2 and line[FETCHMAIL_LINE] == 0:
            carry += line[:FETCHMAIL_LINE]
            continue
        out.append(carry + line)
        carry = b""
    assert carry == b"", "a cut line at the very end"
    return b"\n".join(out)


def certificate_md5(target: Target) -> str:
    """The MD5 fingerprint of the server's certificate, as fetchmail prints and checks it."""
    assert target.tls is not None
    chain = target.tls.cert.read_text()
    leaf = chain[: chain.index("-----END CERTIFICATE-----")] + "-----END CERTIFICATE-----\n"
    digest = hashlib.md5(ssl.PEM_cert_to_DER_cert(leaf)).hexdigest().upper()  # fetchmail's
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def tls_options(target: Target) -> str:
    if target.transport == "plain":
        return "sslproto ''"  # never STLS (the plain server does not offer it anyway)
    # fetchmail's own certificate name check (sslcertck, on by default since 6.4) only
    # looks at the subject CommonName and, when there is one, the subjectAltNames: trustme
    # certificates name the host in subjectAltName alone (as RFC 6125 wants), so it fails
    # them with "Server name not specified in certificate!". Instead the certificate is
    # pinned by fingerprint: a mismatch aborts the connection before any command is sent.
    tls = f"no sslcertck sslcertfile '{target.ca_file}' sslfingerprint '{certificate_md5(target)}'"
    if target.transport == "tls":
        return "ssl sslproto 'tls1.2+' " + tls
    return "sslproto 'tls1.2+' " + tls  # without `ssl`: STLS, and fail if it is not offered


def fetchmail(target: Target, *, keep: bool) -> list[bytes]:
    exe = require_program("fetchmail")
    out = target.workdir / "fetched"
    out.mkdir()
    rc = target.workdir / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        "set invisible\n"
        f"set idfile '{target.workdir / 'fetchids'}'\n"
        f"poll {target.host} with proto POP3 port {target.port} timeout 20\n"
        f"  user '{target.user}' there with password '{target.password}' is 'root' here\n"
        f"  options {'keep' if keep else 'no keep'} fetchall no rewrite {tls_options(target)}\n"
        f"  mda \"sh -c 'cat > {out}/$$'\"\n"
    )
    rc.chmod(0o600)
    target.run([exe, "--nodetach", "--nosyslog", "-f", str(rc)])
    return [rejoin_long_lines(m) for m in read_dir(out)]


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
def test_fetchmail_keep(target: Target) -> None:
    assert_mailbox(fetchmail(target, keep=True), f"fetchmail (keep) over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
def test_fetchmail_delete(target: Target) -> None:
    assert_mailbox(fetchmail(target, keep=False), f"fetchmail (delete) over {target.transport}")
    target.assert_emptied()


@pytest.mark.parametrize("target", on_defaults(), indirect=True)
def test_fetchmail_on_its_defaults(target: Target) -> None:
    assert_mailbox(fetchmail(target, keep=True), f"fetchmail over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", through_haproxy(), indirect=True)
def test_fetchmail_through_haproxy(target: Target) -> None:
    assert_mailbox(fetchmail(target, keep=True), f"fetchmail through HAProxy, {target.transport}")
    target.assert_unchanged()
