"""Postfix from Debian's package, run from a private configuration in a directory of its own.

`postfix -c DIR start` with its own main.cf and master.cf, queue, data directory and log file
(`maillog_file`, written by the `postlog` service: no syslog), listening for SMTP on one port
of 127.0.0.1 only. Nothing of the machine's /etc/postfix setup is read or changed, and a system
Postfix on port 25, if any, is left alone. Needs root (the master runs as root, its daemons as
`postfix`); the directory must be one those daemons can traverse (`shared_directory()`).

Mail to domains the test did not configure is bounced at once by the `error` transport, and
no DNS is used, so a stray message never leaves the machine or waits for a timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import free_port, unavailable

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = {hostname}
mydomain = example.test
myorigin = $myhostname
mydestination =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
default_transport = error:mail outside this test is refused
relay_transport = error:mail outside this test is refused
smtpd_banner = $myhostname ESMTP Postfix
"""

# Every service with chroot off ("n" in the fifth column): there is no jail to populate.
MASTER_CF = """\
{smtp_listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

HOSTNAME = "mx.example.test"


def available() -> str | None:
    """Why Postfix cannot run here, or None."""
    return unavailable("postfix", "postfix")


@dataclass(frozen=True)
class Outcome:
    """What Postfix's log says became of one recipient of one queued message."""

    queue_id: str
    recipient: str
    status: str  # sent, bounced, deferred
    line: str  # the whole log line, with the relay, dsn= and the remote reply


class Postfix:
    """One private Postfix instance. `main` adds to or overrides main.cf."""

    def __init__(self, root: Path, main: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.config_dir = root / "etc"
        self.queue_dir = root / "queue"
        self.log_path = root / "postfix.log"
        self.port = free_port()
        self.master_pid: int | None = None
        self.config_dir.mkdir(parents=True)
        self.queue_dir.mkdir()  # root's, 0755; `postfix check` makes what goes inside
        settings = {}
        for line in MAIN_CF.format(root=root, hostname=HOSTNAME).splitlines():
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
        settings.update(main or {})
        (self.config_dir / "main.cf").write_text(
            "".join(f"{key} = {value}".rstrip() + "\n" for key, value in settings.items())
        )
        (self.config_dir / "master.cf").write_text(
            MASTER_CF.format(smtp_listen=f"127.0.0.1:{self.port}")
        )
        # postfix-script refuses to start with a data directory not owned by postfix.
        data = root / "data"
        data.mkdir(mode=0o700)
        shutil.chown(data, "postfix", "postfix")

    def _postfix(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["postfix", "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> Postfix:
        """`postconf -n`, `postfix check` (which also makes the queue's directories), then
        `postfix start`, any warning being an error; wait for the SMTP port. On any failure,
        stop."""
        try:
            # postconf names parameters it does not know ("unused parameter"): typos.
            postconf = subprocess.run(
                ["postconf", "-c", str(self.config_dir), "-n"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if postconf.returncode != 0 or postconf.stderr.strip():
                raise RuntimeError(f"postconf: {postconf.stderr}")
            check = self._postfix("check")
            if check.returncode != 0 or check.stderr.strip():
                raise RuntimeError(f"postfix check: {check.stderr}{check.stdout}{self.log()}")
            started = self._postfix("start")
            if started.returncode != 0 or started.stderr.strip():
                raise RuntimeError(f"postfix start: {started.stderr}{started.stdout}{self.log()}")
            self.master_pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("Postfix does not listen: " + self.log()) from None
                    time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def processes(self) -> list[int]:
        """Live processes of this instance: the master and the daemons it started, which all
        carry MAIL_CONFIG=<our config directory> in their environment."""
        marker = f"MAIL_CONFIG={self.config_dir}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0"):
                pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        """`postfix stop`, then wait (bounded) until none of our processes is left; what is
        still running after that is killed by its process id."""
        if self.master_pid is None and not self.processes():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):  # what is left is killed below
            self._postfix("stop", timeout=30)
        deadline = time.monotonic() + 15
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.master_pid = None

    def __enter__(self) -> Postfix:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def mailq(self) -> str:
        """`postqueue -p` of this instance (what `mailq` prints)."""
        return subprocess.run(
            ["postqueue", "-c", str(self.config_dir), "-p"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout

    def wait_queue_empty(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while "Mail queue is empty" not in (queue := self.mailq()):
            if time.monotonic() > deadline:
                raise AssertionError(f"Postfix's queue is not empty:\n{queue}\n{self.log()}")
            time.sleep(0.1)

    def send(
        self,
        sender: str,
        recipients: list[str],
        message: bytes,
        mail_options: tuple[str, ...] = (),
    ) -> str:
        """Submit over SMTP to our port; returns the queue id from the reply to DATA. The
        message is sent as given (CRLF line ends; smtplib dot-stuffs it)."""
        with smtplib.SMTP("127.0.0.1", self.port, "client.sender.test", timeout=30) as smtp:
            smtp.ehlo()
            code, reply = smtp.mail(sender, list(mail_options))
            assert code == 250, reply
            for recipient in recipients:
                code, reply = smtp.rcpt(recipient)
                assert code == 250, (recipient, reply)
            code, reply = smtp.data(message)
            assert code == 250, reply
        match = re.search(rb"queued as (\w+)", reply)
        assert match, reply
        return match.group(1).decode()

    def outcomes(self, queue_id: str) -> dict[str, Outcome]:
        found = {}
        pattern = re.compile(
            rf"postfix/\S+\[\d+\]: {queue_id}: to=<([^>]*)>,.* status=(\w+)\b.*$", re.M
        )
        for match in pattern.finditer(self.log()):
            found[match.group(1)] = Outcome(queue_id, match.group(1), match.group(2),
                                            match.group(0))  # fmt: skip
        return found

    def wait_final(
        self, queue_id: str, recipients: list[str], timeout: float = 30
    ) -> dict[str, Outcome]:
        """Each recipient's outcome once all are final (sent or bounced) and the queue file is
        removed. A deferral fails at once: Postfix would retry only minutes later."""
        deadline = time.monotonic() + timeout
        while True:
            outcomes = self.outcomes(queue_id)
            deferred = [o.line for o in outcomes.values() if o.status == "deferred"]
            if deferred:
                raise AssertionError("deferred:\n" + "\n".join(deferred) + "\n" + self.log())
            removed = re.search(rf": {queue_id}: removed$", self.log(), re.M)
            if removed and all(r in outcomes for r in recipients):
                return outcomes
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{queue_id} not delivered in {timeout}s:\n{self.log()}\n{self.mailq()}"
                )
            time.sleep(0.05)

    def bounce_of(self, queue_id: str) -> str:
        """The queue id of the non-delivery notification Postfix made for `queue_id`."""
        match = re.search(rf": {queue_id}: sender non-delivery notification: (\w+)$", self.log(),
                          re.M)  # fmt: skip
        assert match, self.log()
        return match.group(1)
