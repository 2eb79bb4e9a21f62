"""Twisted's POP3 server over our Maildirs, as a peer for the benchmark.

    python bench/peers/twisted_pop3.py --passwd FILE --mail '/srv/mail/{user}/Maildir' \\
        --port P [--tls-port Q --cert CERT.pem --key KEY.pem] [--host 127.0.0.1]

What runs is Twisted as its documentation puts it together: `twisted.mail.pop3.POP3` built by
a plain `ServerFactory`, a `twisted.cred` portal with a realm that hands out Twisted's own
`twisted.mail.maildir.MaildirMailbox`, the default reactor (epoll on Linux), `listenTCP` for
plain POP3 and `listenSSL` (TLSMemoryBIO over pyOpenSSL) for implicit TLS. Users come from a
Dovecot-style passwd-file (`alice:{PLAIN}secret::::::`, only `{PLAIN}` is understood), loaded
into Twisted's `InMemoryUsernamePasswordDatabaseDontUse` checker: USER/PASS only.

Prints one line, `listening plain=<port> tls=<port or 0>`, once the reactor runs with every
listener bound; stops cleanly on SIGTERM or SIGINT (Twisted's own signal handlers). Logs
nothing per connection: the factory is not `noisy`, and only warnings and errors (tracebacks
from Twisted) reach stderr.

What we changed in Twisted and why (Twisted 26.10; see `PatchedMaildirMailbox` and
`MaildirRealm`). `MaildirMailbox` must be given a bytes path (its `__init__` joins `b"cur"` and
`b"new"`: a str path fails at PASS with "Can't mix strings and bytes"), and then two of its
methods cannot work on Python 3:

- `getMessage` opens the message in text mode, so `POP3.transformChunk` gets str, raises
  TypeError inside the file sender, and RETR and TOP send "+OK <size>" and nothing more: the
  session hangs until the client gives up. We open the file in binary mode.
- `deleteMessage` joins the bytes path with str `".Trash"`, `"cur"`: TypeError; Twisted's error
  handler then fails too (it joins the str exception args as bytes), and the connection is
  dropped without a reply. We join bytes.

DELE also needs `.Trash/{cur,new,tmp}` in the Maildir, which Twisted creates only for a
Maildir it makes itself; the realm adds it to an existing Maildir that lacks it. Nothing else
is changed. What stays as Twisted does it, and differs from RFC 1939 and from pop3d/Dovecot,
is for whoever reads the benchmark's numbers (tests/bench/test_twisted_peer.py pins it):

- The message list is read at PASS: `cur/` and `new/` sorted by file name. Files in `new/`
  stay there (nothing moves them to `cur/`).
- Sizes in STAT and LIST are the file's size on disk (LF line ends), not the size as sent with
  CRLF, and each STAT or LIST stats every file again.
- RETR and TOP send LF as CRLF; a message stored with CRLF goes out with CR CR LF.
- Dot-stuffing is done per 16 KiB read on "\r\n.": a dot that starts the message, or a line
  that starts exactly at a 16 KiB boundary of the file, is not stuffed (a lone "." there would
  end the message early for the client).
- UIDL is the MD5 hex digest of the file's base name (so it changes if another program
  renames the file, e.g. adding `:2,S` flags when moving it from `new/` to `cur/`).
- DELE renames the file into `.Trash/cur/` at once; QUIT does nothing more (`sync` is a
  no-op), and a connection that drops without QUIT does not undelete. RSET moves files back.
- A deleted message still counts in STAT's message count and is listed by LIST with size 0;
  RETR of it is refused. UIDL (the listing) after a DELE in the same session raises TypeError
  in `getUidl` and never answers, blocking the session (twisted/twisted#9094 is the LIST/UIDL
  half of this). DELE of a deleted message, or of a number out of range, raises out of the
  protocol: Twisted logs the traceback and drops the connection without a reply.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from twisted.cred import checkers, portal
from twisted.internet import protocol, reactor, ssl
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from twisted.mail import maildir, pop3
from zope.interface import implementer

PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\s*", re.S)


class PatchedMaildirMailbox(maildir.MaildirMailbox):
    """Twisted's MaildirMailbox with its two Python 3 bytes/str crashes fixed; nothing else.

    Both bodies are Twisted's own, with only the mode or the literals changed (see the module
    docstring for what goes wrong without them).
    """

    def getMessage(self, i):
        # Twisted: open(self.list[i]), text mode -> str chunks -> TypeError in transformChunk.
        # (Like Twisted's, the file is closed when FileSender drops it at EOF.)
        return open(self.list[i], "rb")

    def deleteMessage(self, i):
        # Twisted: os.path.join(self.path, ".Trash", "cur", ...) with a bytes self.path.
        trash_file = os.path.join(self.path, b".Trash", b"cur", os.path.basename(self.list[i]))
        os.rename(self.list[i], trash_file)
        self.deleted[self.list[i]] = trash_file
        self.list[i] = 0


def read_passwd_file(path: Path) -> dict[bytes, bytes]:
    """User -> cleartext password from a Dovecot passwd-file; only {PLAIN} entries count."""
    users: dict[bytes, bytes] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, _, rest = line.partition(":")
        password = rest.split(":", 1)[0]
        if not user or not password.startswith("{PLAIN}"):
            print(f"{path}:{number}: not a {{PLAIN}} entry, skipped", file=sys.stderr)
            continue
        users[user.encode("utf-8")] = password[len("{PLAIN}") :].encode("utf-8")
    return users


@implementer(portal.IRealm)
class MaildirRealm:
    """Each user's Maildir from a path template with {user}; as MaildirDirdbmDomain does it."""

    def __init__(self, template: str) -> None:
        self.template = template

    def requestAvatar(self, avatar_id, mind, *interfaces):
        if pop3.IMailbox not in interfaces:
            raise NotImplementedError("only POP3 mailboxes")
        # MaildirMailbox wants bytes: its __init__ joins b"cur" and b"new".
        path = os.fsencode(self.template.replace("{user}", avatar_id.decode("utf-8")))
        # DELE moves the file into .Trash/cur/, which Twisted creates only for a Maildir it
        # makes itself (initializeMaildir does nothing to an existing directory).
        trash = os.path.join(path, b".Trash")
        if os.path.isdir(path) and not os.path.isdir(trash):
            for sub in (b"cur", b"new", b"tmp"):
                os.makedirs(os.path.join(trash, sub), exist_ok=True)
        return pop3.IMailbox, PatchedMaildirMailbox(path), lambda: None


class POP3Factory(protocol.ServerFactory):
    """Builds twisted.mail.pop3.POP3 with the portal; not noisy, so no log line per session."""

    protocol = pop3.POP3
    noisy = False

    def __init__(self, cred_portal: portal.Portal) -> None:
        self.portal = cred_portal

    def buildProtocol(self, addr):
        p = protocol.ServerFactory.buildProtocol(self, addr)
        p.portal = self.portal
        return p


def tls_options(cert: Path, key: Path) -> ssl.CertificateOptions:
    """Certificate (first PEM block), its chain (the rest) and key, as Twisted's TLS wants."""
    blocks = PEM_CERT.findall(cert.read_bytes())
    if not blocks:
        raise SystemExit(f"{cert}: no PEM certificate")
    leaf = ssl.PrivateCertificate.loadPEM(blocks[0] + key.read_bytes())
    return ssl.CertificateOptions(
        privateKey=leaf.privateKey.original,
        certificate=leaf.original,
        extraCertChain=[ssl.Certificate.loadPEM(b).original for b in blocks[1:]],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--passwd", type=Path, required=True, help="Dovecot-style passwd-file")
    parser.add_argument("--mail", required=True, help="Maildir path with {user}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="plain POP3 port (0: any)")
    parser.add_argument("--tls-port", type=int, help="implicit-TLS POP3 port (0: any)")
    parser.add_argument("--cert", type=Path, help="PEM certificate, then its chain")
    parser.add_argument("--key", type=Path, help="PEM private key")
    args = parser.parse_args(argv)
    if "{user}" not in args.mail:
        parser.error("--mail must contain {user}")
    if args.tls_port is not None and (args.cert is None or args.key is None):
        parser.error("--tls-port needs --cert and --key")

    # Only warnings and errors, to stderr; Twisted would otherwise buffer every event.
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
            )
        ],
        redirectStandardIO=False,
    )

    checker = checkers.InMemoryUsernamePasswordDatabaseDontUse()
    for user, password in read_passwd_file(args.passwd).items():
        checker.addUser(user, password)
    factory = POP3Factory(portal.Portal(MaildirRealm(args.mail), [checker]))

    plain = reactor.listenTCP(args.port, factory, interface=args.host)
    tls_port = 0
    if args.tls_port is not None:
        tls = reactor.listenSSL(
            args.tls_port, factory, tls_options(args.cert, args.key), interface=args.host
        )
        tls_port = tls.getHost().port

    def announce() -> None:
        print(f"listening plain={plain.getHost().port} tls={tls_port}", flush=True)

    reactor.callWhenRunning(announce)
    reactor.run()  # installs SIGINT/SIGTERM handlers that stop the reactor
    return 0


if __name__ == "__main__":
    sys.exit(main())
