"""Dovecot's POP3 server from Debian's package, run from a config of its own in a directory.

For the UIDL comparison tests and for `bench/compare`. Needs root (Dovecot drops privileges
itself); mail is accessed as `nobody`, so the Maildirs are handed to that user.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from . import free_port, unavailable

CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = pop3
listen = 127.0.0.1
{ssl}
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/home/%u
}}
mail_location = maildir:{mail}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = {tls_port}
    ssl = yes
  }}
  process_min_avail = 2
  service_count = 0
}}
service anvil {{
  chroot =
}}
pop3_uidl_format = %08Xu%08Xv
default_login_user = dovenull
default_internal_user = dovecot
"""


def available() -> str | None:
    """Why Dovecot cannot run here, or None."""
    return unavailable("dovecot", "dovecot-pop3d")


class DovecotPop3:
    """`mail` is a Dovecot path with %u, e.g. /srv/mail/%u/Maildir."""

    def __init__(
        self,
        root: Path,
        passwd: Path,
        mail: str,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.root = root
        self.port = free_port()
        self.tls_port = free_port()
        for sub in ("run", "state", "home"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        ssl = "ssl = no"
        if tls:
            ssl = f"ssl = yes\nssl_cert = <{tls[0]}\nssl_key = <{tls[1]}"
        self.config = root / "dovecot.conf"
        self.config.write_text(
            CONFIG.format(
                root=root,
                passwd=passwd,
                mail=mail,
                port=self.port,
                tls_port=self.tls_port,
                ssl=ssl,
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DovecotPop3:
        subprocess.run(["chown", "-R", "nobody:nogroup", str(self.root / "home")], check=True)
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError("Dovecot did not start: " + self.log())

    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pids(self) -> list[int]:
        """The master and its children (for CPU accounting)."""
        assert self.proc is not None
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [self.proc.pid, *(int(p) for p in out.split())]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> DovecotPop3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def shared_directory() -> Iterator[Path]:
    """A scratch directory Dovecot's unprivileged processes can reach (pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pop3d-peer-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def give_to_nobody(path: Path) -> None:
    subprocess.run(["chown", "-R", "nobody:nogroup", str(path)], check=True)
