"""The real Postfix (Debian's package) delivering to pop3d, then poplib fetching the mail.

Postfix takes a message over SMTP on a port of 127.0.0.1 and hands it to pop3d two ways:
over LMTP (`virtual_transport = lmtp:inet:127.0.0.1:<pop3d's LMTP port>`, domain lmtp.test)
and through `mailbox_command = pop3d deliver ...` run by local(8) (domain local.test). Each
message must come out of POP3 RETR as it went into SMTP DATA, byte for byte after CRLF
normalisation, below exactly the trace lines the path adds: Postfix's Received:, then for LMTP
pop3d's Return-Path: and Delivered-To:, for local(8) its Return-Path:, X-Original-To: and
Delivered-To:. Unknown recipients must be refused by pop3d (LMTP 550 5.1.1 at RCPT; exit 67 of
`pop3d deliver`), which Postfix turns into a bounce that we fetch from the sender's mailbox.
"""

from __future__ import annotations

import functools
import json
import os
import poplib
import re
import shlex
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import pop3d
from pop3d.store.maildir import ensure_maildir
from pop3d.testing import ServerThread
from tests.conftest import not_here
from tests.peers.dovecot import give_to_nobody, shared_directory
from tests.peers.postfix import HOSTNAME, Postfix, available

PASSWORDS = {"alice": "alice pw", "bob": "bob pw", "nobody": "nobody pw"}
SENDER = "carol@sender.test"

# Unix account that local(8) runs mailbox_command as: it must exist, and Postfix never runs a
# command as root. `daemon` exists too but is no pop3d user: the unknown-user case.
LOCAL_USER = "nobody"
NOT_A_POP3D_USER = "daemon"


def original_message(tag: str, to: str) -> bytes:
    """A message with what breaks naive relays: folded and encoded headers, 8-bit UTF-8,
    lines of one dot, leading dots, a body line starting with "From ", tabs, trailing
    spaces, a 998-octet line, blank lines at the end."""
    long_line = ("0123456789" * 100)[:998]
    lines = [
        f"Message-ID: <{tag}@sender.test>",
        "Date: Mon, 02 Jan 2023 03:04:05 +0000",
        'From: "Carol Q. Sender" <carol@sender.test>',
        f"To: <{to}>",
        f"Subject: =?utf-8?q?caf=C3=A9?= {tag} with a header that is long enough to be",
        "\tfolded onto a second line, as mail clients do",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "X-Spaces: trailing   ",
        "",
        "Grüße, café, 日本語",
        ".",
        ". a line that starts with a dot",
        "..two dots",
        "From the start of a line (mbox would escape this)",
        "\ttab\tseparated\t",
        long_line,
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + b"\r\n"


def received_pattern(queue_id: str, recipient: str | None) -> bytes:
    """The Received: header Postfix's smtpd adds (smtpd_peername_lookup is off, so the client
    is `unknown`), naming the recipient when there is only one."""
    start = (
        rb"Received: from client\.sender\.test \(unknown \[127\.0\.0\.1\]\)\r\n"
        rb"\tby " + re.escape(HOSTNAME.encode()) + rb" \(Postfix\) with ESMTP id "
        + queue_id.encode()
    )  # fmt: skip
    if recipient is None:
        return start + rb";\r\n\t[^\r\n]+\r\n"
    return start + rb"\r\n\tfor <" + re.escape(recipient.encode()) + rb">; [^\r\n]+\r\n"


def normalise(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def fetch_all(port: int, user: str) -> list[bytes]:
    """Every message of the maildrop by RETR (deleted afterwards), CRLF line ends. The size
    LIST announces must be the octets RETR sends."""
    pop = poplib.POP3("127.0.0.1", port, timeout=20)
    try:
        pop.user(user)
        pop.pass_(PASSWORDS[user])
        messages = []
        for entry in pop.list()[1]:
            number, size = entry.split()
            reply, lines, _ = pop.retr(int(number))
            message = b"".join(line + b"\r\n" for line in lines)
            assert int(size) == len(message), (entry, reply)
            messages.append(message)
            pop.dele(int(number))
        pop.quit()
    finally:
        pop.close()
    return messages


def fetch_one(port: int, user: str) -> bytes:
    messages = fetch_all(port, user)
    assert len(messages) == 1, messages
    return messages[0]


@functools.cache
def deliver_argv() -> tuple[list[str], dict[str, str]]:
    """How an unprivileged user runs `pop3d deliver`: the interpreter running these tests, or
    when that user cannot execute it (a pyenv under /root, mode 0700) the same Python version
    from /usr/bin with this interpreter's packages and this pop3d source on PYTHONPATH."""
    candidates: list[tuple[list[str], dict[str, str]]] = [([sys.executable, "-m", "pop3d"], {})]
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if system.exists():
        paths = sysconfig.get_paths()
        source = str(Path(pop3d.__file__).resolve().parents[1])
        path = os.pathsep.join(dict.fromkeys([source, paths["purelib"], paths["platlib"]]))
        candidates.append(([str(system), "-m", "pop3d"], {"PYTHONPATH": path}))
    tried = []
    for argv, env in candidates:
        try:
            probe = subprocess.run(
                [*argv, "--version"],
                env={"PATH": "/usr/bin:/bin", **env},
                user=LOCAL_USER,
                group="nogroup",
                extra_groups=[],
                cwd="/",
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except OSError as exc:
            tried.append(f"{shlex.join(argv)}: {exc}")
            continue
        if probe.returncode == 0:
            return argv, env
        tried.append(f"{shlex.join(argv)}: {probe.stderr.strip()[-300:]}")
    return not_here(f"user {LOCAL_USER} cannot run pop3d: " + "; ".join(tried))


@dataclass
class MailSystem:
    pop3d: ServerThread
    postfix: Postfix


@pytest.fixture(scope="module")
def mail_system() -> Iterator[MailSystem]:
    """One pop3d and one Postfix for the module (a fresh Postfix costs seconds)."""
    reason = available()
    if reason:
        not_here(reason)
    argv, env = deliver_argv()
    # Postfix's daemons run as `postfix` and `pop3d deliver` as `nobody`: pytest's tmp_path
    # (mode 0700) is out of their reach.
    with shared_directory() as root:
        pop3d_dir = root / "pop3d"
        server = ServerThread.in_directory(
            pop3d_dir, users=PASSWORDS, config={"lmtp": {"listen": ["127.0.0.1:0"]}}
        )
        with server:
            # The config `pop3d deliver` reads: the running server's passwd-file and Maildirs.
            deliver_config = pop3d_dir / "deliver.toml"
            deliver_config.write_text(
                f"[auth]\npasswd_file = {json.dumps(str(server.config.passwd_file))}\n"
                f"[maildir]\npath = {json.dumps(server.config.maildir_template)}\n"
            )
            # mailbox_command runs with the recipient's uid: its Maildir must be its own.
            maildir = server.maildir(LOCAL_USER)
            ensure_maildir(maildir)
            give_to_nobody(maildir.parent)
            command = " ".join(
                [
                    *(f"{k}={shlex.quote(v)}" for k, v in env.items()),
                    shlex.join([*argv, "deliver", "--config", str(deliver_config)]),
                    '"$RECIPIENT"',
                ]
            )
            postfix = Postfix(
                root / "postfix",
                {
                    "virtual_mailbox_domains": "lmtp.test",
                    "virtual_transport": f"lmtp:inet:127.0.0.1:{server.lmtp_port}",
                    "mydestination": "local.test",
                    "local_transport": "local",
                    "recipient_delimiter": "+",
                    "mailbox_command": command,
                },
            )
            with postfix:
                yield MailSystem(server, postfix)


@pytest.fixture
def mail(mail_system: MailSystem) -> MailSystem:
    """The shared mail system, as each test must find it: Postfix's queue and every maildrop
    empty, whatever the test before left (a failed one may leave mail in flight)."""
    mail_system.postfix.wait_queue_empty()
    for user in PASSWORDS:
        for sub in ("new", "cur"):
            for path in (mail_system.pop3d.maildir(user) / sub).glob("*"):
                path.unlink()
    return mail_system


def test_lmtp_delivery_arrives_intact(mail: MailSystem) -> None:
    original = original_message("lmtp", "alice@lmtp.test")
    qid = mail.postfix.send(SENDER, ["alice@lmtp.test"], original, ("BODY=8BITMIME",))
    outcome = mail.postfix.wait_final(qid, ["alice@lmtp.test"])["alice@lmtp.test"]
    assert outcome.status == "sent", outcome.line
    assert f"relay=127.0.0.1[127.0.0.1]:{mail.pop3d.lmtp_port}" in outcome.line
    assert "dsn=2.0.0" in outcome.line
    assert "250 2.0.0 <alice@lmtp.test> Saved" in outcome.line

    fetched = fetch_one(mail.pop3d.port, "alice")
    trace = b"Return-Path: <carol@sender.test>\r\nDelivered-To: alice@lmtp.test\r\n"
    assert fetched.startswith(trace), fetched[:300]
    received = re.match(received_pattern(qid, "alice@lmtp.test"), fetched[len(trace) :])
    assert received, fetched[:500]
    assert fetched[len(trace) + received.end() :] == normalise(original)


def test_lmtp_unknown_recipient_is_refused_and_bounced(mail: MailSystem) -> None:
    """One message to a user and to an unknown address: pop3d's LMTP takes the first and
    answers 550 5.1.1 at RCPT for the second; Postfix bounces that one to the sender."""
    original = original_message("unknown", "alice@lmtp.test")
    recipients = ["alice@lmtp.test", "nosuchuser@lmtp.test"]
    qid = mail.postfix.send("bob@lmtp.test", recipients, original)
    outcomes = mail.postfix.wait_final(qid, recipients)
    assert outcomes["alice@lmtp.test"].status == "sent", outcomes
    unknown = outcomes["nosuchuser@lmtp.test"]
    assert unknown.status == "bounced", unknown.line
    assert "dsn=5.1.1" in unknown.line
    assert (
        "said: 550 5.1.1 <nosuchuser@lmtp.test> User unknown (in reply to RCPT TO command)"
        in unknown.line
    ), unknown.line

    fetched = fetch_one(mail.pop3d.port, "alice")
    trace = b"Return-Path: <bob@lmtp.test>\r\nDelivered-To: alice@lmtp.test\r\n"
    assert fetched.startswith(trace), fetched[:300]
    # Two recipients: Postfix's Received: has no "for <...>" clause.
    received = re.match(received_pattern(qid, None), fetched[len(trace) :])
    assert received, fetched[:500]
    assert fetched[len(trace) + received.end() :] == normalise(original)

    # The bounce travels the same LMTP path to the sender, bob.
    bounce_qid = mail.postfix.bounce_of(qid)
    bounce = mail.postfix.wait_final(bounce_qid, ["bob@lmtp.test"])["bob@lmtp.test"]
    assert bounce.status == "sent", bounce.line
    dsn = fetch_one(mail.pop3d.port, "bob")
    # Its Return-Path: (a null sender) is test_lmtp_null_sender's matter.
    return_path, rest = dsn.split(b"\r\n", 1)
    assert return_path.startswith(b"Return-Path: <"), dsn[:300]
    assert rest.startswith(b"Delivered-To: bob@lmtp.test\r\nReceived: by mx.example.test"), dsn
    assert b"Content-Type: multipart/report; report-type=delivery-status;" in dsn
    assert b"Final-Recipient: rfc822; nosuchuser@lmtp.test\r\n" in dsn
    assert b"Status: 5.1.1\r\n" in dsn
    assert b"Diagnostic-Code: smtp; 550 5.1.1 <nosuchuser@lmtp.test> User unknown\r\n" in dsn
    assert b"Message-ID: <unknown@sender.test>\r\n" in dsn  # the returned original
    assert fetch_all(mail.pop3d.port, "alice") == []


def test_lmtp_null_sender(mail: MailSystem) -> None:
    """MAIL FROM:<> (a bounce, a vacation reply): RFC 5321 section 4.4 wants
    `Return-Path: <>`."""
    original = original_message("null-sender", "alice@lmtp.test")
    qid = mail.postfix.send("", ["alice@lmtp.test"], original)
    outcome = mail.postfix.wait_final(qid, ["alice@lmtp.test"])["alice@lmtp.test"]
    assert outcome.status == "sent", outcome.line
    fetched = fetch_one(mail.pop3d.port, "alice")
    return_path, rest = fetched.split(b"\r\n", 1)
    assert rest.startswith(b"Delivered-To: alice@lmtp.test\r\n"), fetched[:300]
    trace_end = len(b"Delivered-To: alice@lmtp.test\r\n")
    received = re.match(received_pattern(qid, "alice@lmtp.test"), rest[trace_end:])
    assert received, fetched[:500]
    assert rest[trace_end + received.end() :] == normalise(original)
    assert return_path == b"Return-Path: <>"


# local(8) starts what it pipes to a mailbox_command with the mbox envelope line
# "From <sender>  <asctime>", as it does for an mbox file; a Maildir LDA must drop it
# (dovecot-lda and maildrop do). Postfix writes two spaces, asctime pads the day to two.
MBOX_FROM_LINE = re.compile(rb"From \S+  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\r\n")


def test_mailbox_command_delivery_arrives_intact(mail: MailSystem) -> None:
    recipient = f"{LOCAL_USER}@local.test"
    original = original_message("lda", recipient)
    qid = mail.postfix.send(SENDER, [recipient], original, ("BODY=8BITMIME",))
    outcome = mail.postfix.wait_final(qid, [recipient])[recipient]
    assert outcome.status == "sent", outcome.line
    assert "relay=local" in outcome.line
    assert "delivered to command: " in outcome.line

    fetched = fetch_one(mail.pop3d.port, LOCAL_USER)
    assert not MBOX_FROM_LINE.match(fetched), fetched[:200]  # local(8)'s line is dropped
    message = fetched
    # local(8) prepends these for a mailbox_command; pop3d deliver adds nothing of its own.
    trace = (
        b"Return-Path: <carol@sender.test>\r\n"
        b"X-Original-To: " + recipient.encode() + b"\r\n"
        b"Delivered-To: " + recipient.encode() + b"\r\n"
    )
    assert message.startswith(trace), fetched[:300]
    received = re.match(received_pattern(qid, recipient), message[len(trace) :])
    assert received, fetched[:500]
    assert message[len(trace) + received.end() :] == normalise(original)


def test_mailbox_command_address_extension(mail: MailSystem) -> None:
    """nobody+lists@local.test: local(8) finds the unix user without the extension, and
    pop3d deliver, given the whole address, the pop3d user the same way."""
    recipient = f"{LOCAL_USER}+lists@local.test"
    original = original_message("extension", recipient)
    qid = mail.postfix.send(SENDER, [recipient], original)
    outcome = mail.postfix.wait_final(qid, [recipient])[recipient]
    assert outcome.status == "sent", outcome.line
    fetched = fetch_one(mail.pop3d.port, LOCAL_USER)
    assert fetched.endswith(normalise(original))
    assert b"\r\nDelivered-To: " + recipient.encode() + b"\r\n" in fetched


def test_mailbox_command_unknown_user_bounces(mail: MailSystem) -> None:
    """`daemon` is a unix account but no pop3d user: pop3d deliver exits 67 (EX_NOUSER),
    which Postfix reports as 5.1.1 and bounces to the sender."""
    recipient = f"{NOT_A_POP3D_USER}@local.test"
    original = original_message("lda-unknown", recipient)
    qid = mail.postfix.send("bob@lmtp.test", [recipient], original)
    outcome = mail.postfix.wait_final(qid, [recipient])[recipient]
    assert outcome.status == "bounced", outcome.line
    assert "dsn=5.1.1" in outcome.line
    assert f"pop3d deliver: 550 5.1.1 <{recipient}> User unknown" in outcome.line, outcome.line

    bounce_qid = mail.postfix.bounce_of(qid)
    bounce = mail.postfix.wait_final(bounce_qid, ["bob@lmtp.test"])["bob@lmtp.test"]
    assert bounce.status == "sent", bounce.line
    dsn = fetch_one(mail.pop3d.port, "bob")
    assert f"Final-Recipient: rfc822; {recipient}\r\n".encode() in dsn
    assert b"Status: 5.1.1\r\n" in dsn
    assert b"Message-ID: <lda-unknown@sender.test>\r\n" in dsn
    assert not mail.pop3d.maildir(NOT_A_POP3D_USER).exists()
