"""The `pop3d` command."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import logging
import os
import resource
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .auth.base import AuthUnavailable
from .auth.passwd_edit import PasswdEditError, add_user, delete_user, set_password
from .auth.passwd_file import PasswdFile
from .auth.sasl.offer import choose
from .auth.schemes import NEW_HASHES, hash_password
from .config import Config, ConfigError, OAuth2Config, load_config
from .ingress.delivery import Deliverer, Outcome, without_from_line
from .principal import Principal, is_safe_user_name
from .store.maildir import MaildirStore, deliver, ensure_maildir, maildir_stats

if TYPE_CHECKING:
    from .server import Pop3Server
    from .server.listeners import Listeners

# The server (asyncio, TLS, LMTP) is imported only by the commands that use it: `pop3d deliver`
# runs once per message and should start fast.

log = logging.getLogger("pop3d")

DEFAULT_DATA_DIR = Path("pop3d-data")
CONFIG_NAME = "pop3d.toml"

_DEFAULT_CONFIG = """\
# Written by `pop3d serve` on first run. Every key is described in the README.
[server]
listen = ["127.0.0.1:1110"]         # plain POP3, offers STLS
listen_tls = ["127.0.0.1:1995"]     # implicit TLS (POP3S)

[tls]
cert = "tls/cert.pem"               # self-signed for localhost, made on first run
key = "tls/key.pem"

[auth]
passwd_file = "users.passwd"

[maildir]
path = "mail/{user}/Maildir"
"""

_WELCOME = """\
From: pop3d <postmaster@localhost>
To: demo@localhost
Subject: Welcome to pop3d
Message-ID: <welcome@pop3d.localhost>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hello!

This message was put here by pop3d when it created its data directory.
Fetch it with any POP3 client, or by hand:

  telnet 127.0.0.1 1110
  USER demo
  PASS <the password pop3d printed>
  LIST
  RETR 1
  DELE 1
  QUIT
"""


def bootstrap_data_dir(data_dir: Path) -> Path:
    """Create the embedded default (config, passwd-file, demo Maildir) unless it exists."""
    config_path = data_dir / CONFIG_NAME
    if config_path.exists():
        return config_path
    password = create_data_dir(data_dir)
    print(f"Created {data_dir}/ with user 'demo', password: {password}")
    print("(the password is shown only this once; it is stored hashed in users.passwd)")
    return config_path


def create_data_dir(data_dir: Path) -> str:
    """Write the embedded default into `data_dir`; the demo user's new password."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    passwd = data_dir / "users.passwd"
    # SCRAM-SHA-256's keys, from which every mechanism can be completed: a client that will
    # not send a password in the clear (mpop's default on a plain link) logs in too.
    passwd.write_text(f"demo:{hash_password('SCRAM-SHA-256', password.encode())}::::::\n")
    passwd.chmod(0o600)
    deliver(data_dir / "mail" / "demo" / "Maildir", [_WELCOME.encode()])
    from .tls import generate_self_signed  # noqa: PLC0415 - see the imports

    (data_dir / "tls").mkdir(mode=0o700, exist_ok=True)
    generate_self_signed(data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem")
    (data_dir / CONFIG_NAME).write_text(_DEFAULT_CONFIG)
    return password


class CommandError(Exception):
    """A one-line error for the user, with the exit status to leave with."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _config_path(args: argparse.Namespace) -> Path:
    """--config, or the embedded default's config in --data-dir (which must exist)."""
    if args.config:
        return Path(args.config)
    path = Path(args.data_dir) / CONFIG_NAME
    if not path.exists():
        raise CommandError(f"no {path}: give --config FILE, or run `pop3d serve` once", 78)
    return path


def _load(args: argparse.Namespace) -> Config:
    try:
        return load_config(_config_path(args))
    except ConfigError as exc:
        raise CommandError(str(exc), 78) from None


def _serve(args: argparse.Namespace) -> int:
    config_path: Path = args.config or bootstrap_data_dir(args.data_dir)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CommandError(str(exc), 78) from None
    _setup_logging(config)
    import asyncio  # noqa: PLC0415 - see the imports

    from .server.listeners import bind  # noqa: PLC0415 - see the imports

    _raise_fd_limit()
    try:
        listeners = bind(config)
    except OSError as exc:
        raise CommandError(f"cannot listen: {exc}", 71) from None  # EX_OSERR
    _choose_event_loop(config.server.event_loop)
    if config.server.workers > 1:
        return _supervise(config, config_path, listeners)
    try:
        asyncio.run(_run(config, config_path, listeners))
    except OSError as exc:
        raise CommandError(f"cannot start: {exc}", 71) from None
    return 0


def _raise_fd_limit() -> None:
    """Every session holds a socket: allow as many files as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _supervise(config: Config, config_path: Path, listeners: Listeners) -> int:
    """Run `workers` processes on the same listening sockets; pass signals on; restart a
    worker that dies (at most a few times a minute, so a broken one cannot spin)."""
    import asyncio  # noqa: PLC0415 - see the imports

    def spawn() -> int:
        pid = os.fork()
        if pid == 0:  # the worker
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 0
            try:
                asyncio.run(_run(config, config_path, listeners))
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 70
            os._exit(code)
        return pid

    workers = {spawn() for _ in range(config.server.workers)}
    stopping = False

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = stopping or sig != signal.SIGHUP
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    log.info("pop3d %s ready (%d workers)", __version__, len(workers))
    restarts: list[float] = []
    while workers:
        pid, status = os.wait()
        workers.discard(pid)
        if stopping:
            continue
        log.error("worker %d exited (status %d)", pid, os.waitstatus_to_exitcode(status))
        restarts = [t for t in restarts if t > time.monotonic() - 60] + [time.monotonic()]
        if len(restarts) > 5:
            log.error("workers keep dying: stopping")
            forward(signal.SIGTERM, None)
            continue
        workers.add(spawn())
    listeners.close()
    log.info("stopped")
    return 0


def _deliver(args: argparse.Namespace) -> int:
    """A local delivery agent: one message on stdin, sysexits codes for the MTA."""
    try:
        config = _load(args)
    except CommandError as exc:
        print(f"pop3d deliver: {exc}", file=sys.stderr)
        return 75  # the MTA keeps the message and retries once the config is fixed
    logging.basicConfig(level=logging.WARNING, format="pop3d deliver: %(message)s")
    users = PasswdFile(config.passwd_file)
    deliverer = Deliverer(config, users, _maildir_store(config))
    try:
        recipient = deliverer.resolve(args.user)
    except AuthUnavailable as exc:
        print(f"pop3d deliver: {exc}", file=sys.stderr)
        return Outcome.TEMPORARY.exit_code
    if recipient is None:
        outcome = Outcome.UNKNOWN_USER
    else:
        stdin = sys.stdin.buffer
        message = without_from_line(iter(lambda: stdin.read(1 << 16), b""))
        outcome = deliverer.deliver(recipient, message)
    if outcome is not Outcome.DELIVERED:
        print(f"pop3d deliver: {outcome.reply(args.user)}", file=sys.stderr)
    return outcome.exit_code


def _maildir_store(config: Config) -> MaildirStore:
    return MaildirStore(config.maildir_template, uidl_format=config.maildir.uidl_format)


def _read_password(args: argparse.Namespace) -> bytes:
    if args.password_stdin:
        line = sys.stdin.buffer.readline().rstrip(b"\r\n")
        if not line:
            raise CommandError("no password on standard input")
        return line
    if not sys.stdin.isatty():
        raise CommandError("standard input is not a terminal: use --password-stdin")
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Again: "):
        raise CommandError("the passwords differ")
    if not first:
        raise CommandError("empty password")
    return first.encode()


def _new_hash(args: argparse.Namespace, config: Config) -> str:
    scheme = args.scheme or config.auth.password_scheme
    try:
        return hash_password(scheme, _read_password(args))
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _check_new_user(name: str) -> None:
    if not is_safe_user_name(name) or ":" in name:
        raise CommandError(f"{name!r} cannot be a user name (no '/', ':', '..', spaces, ...)")


def _user(args: argparse.Namespace) -> int:
    config = _load(args)
    path = config.passwd_file
    try:
        match args.action:
            case "add":
                _check_new_user(args.name)
                add_user(path, args.name, _new_hash(args, config))
                maildir = _maildir_store(config).path_for(Principal(args.name))
                ensure_maildir(maildir)
                print(f"added {args.name}, Maildir {maildir}")
            case "passwd":
                set_password(path, args.name, _new_hash(args, config))
                print(f"password of {args.name} changed")
            case "delete":
                delete_user(path, args.name)
                print(f"deleted {args.name} (the Maildir is kept)")
            case "list":
                for entry in sorted(PasswdFile(path).users(), key=lambda e: e.name):
                    print(entry.name)
    except (PasswdEditError, AuthUnavailable) as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None
    return 0


def _mailbox_stats(args: argparse.Namespace) -> int:
    config = _load(args)
    try:
        entry = PasswdFile(config.passwd_file).lookup(args.name)
    except AuthUnavailable as exc:
        raise CommandError(str(exc)) from None
    if entry is None:
        raise CommandError(f"no user {args.name}", 67)
    maildir = _maildir_store(config).path_for(entry.principal())
    stats = maildir_stats(maildir)
    print(f"user: {args.name}")
    print(f"maildir: {maildir}")
    print(f"messages: {stats.messages}")
    print(f"octets: {stats.octets}")
    print(f"oldest: {_when(stats.oldest)}")
    print(f"newest: {_when(stats.newest)}")
    return 0


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


def _check_config(args: argparse.Namespace) -> int:
    path = _config_path(args)
    config = _load(args)
    problems = []
    users = PasswdFile(config.passwd_file)
    try:
        count = users.check()
        print(f"passwd-file {config.passwd_file}: {count} users")
        offer = choose(config.auth.mechanisms, users.census(), oauth2=config.oauth2 is not None)
        print(offer.describe().partition(";")[0])
        for name, why in offer.left_out:
            print(f"warning: [auth] mechanisms allows {name}, which is not offered: {why}")
    except AuthUnavailable as exc:
        problems.append(str(exc))
    if config.oauth2 is not None:
        problems += _check_oauth2(config.oauth2)
    if config.tls.cert and config.tls.key:
        from .tls import server_context  # noqa: PLC0415 - see the imports

        try:
            server_context(config.tls.cert, config.tls.key)
            print(f"certificate {config.tls.cert}: loads")
        except (OSError, ValueError) as exc:
            problems.append(f"[tls] cannot load {config.tls.cert}: {exc}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 78
    print(f"{path}: OK")
    return 0


def _check_oauth2(config: OAuth2Config) -> list[str]:
    import asyncio  # noqa: PLC0415 - see the imports

    from .auth.oauth2 import TokenUnavailable, TokenVerifier  # noqa: PLC0415

    async def check() -> str:
        verifier = TokenVerifier(config)
        try:
            return await verifier.check()
        finally:
            await verifier.close()

    try:
        print(f"[oauth2] {asyncio.run(check())}")
    except (OSError, TokenUnavailable) as exc:
        return [str(exc)]
    if config.audience is None:
        print("warning: [oauth2] has no audience: tokens issued for any application log in")
    return []


def _choose_event_loop(choice: str) -> None:
    if choice == "asyncio":
        return
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        if choice == "uvloop":
            raise CommandError("[server] event_loop = uvloop: not installed", 78) from None
        return
    uvloop.install()


async def _run(config: Config, config_path: Path, listeners: Listeners) -> None:
    import asyncio  # noqa: PLC0415 - see the imports

    from .server import Pop3Server  # noqa: PLC0415

    server = Pop3Server(config)
    await server.start(listeners)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, _reload, server, config_path)
    if config.server.workers == 1:
        log.info("pop3d %s ready (%s)", __version__, type(loop).__module__.split(".")[0])
    await server.serve_forever()
    if config.server.workers == 1:
        log.info("stopped")


def _reload(server: Pop3Server, config_path: Path) -> None:
    """SIGHUP: re-read the config and the certificate; on any error keep what runs."""
    try:
        server.reload(load_config(config_path))
    except (ConfigError, OSError) as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)


def _setup_logging(config: Config) -> None:
    worker = "[%(process)d]" if config.server.workers > 1 else ""
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s{worker}: %(message)s",
        stream=sys.stderr,
    )


def _where(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--config", type=Path, help="TOML configuration file")
    group.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"directory of the embedded default (default: ./{DEFAULT_DATA_DIR})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pop3d", description="A POP3 server.")
    parser.add_argument("--version", action="version", version=f"pop3d {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Without --config, use (and on first run create) the "
        "embedded default in --data-dir.",
    )
    _where(serve)
    serve.set_defaults(func=_serve)

    deliver_cmd = commands.add_parser(
        "deliver",
        help="deliver one message from standard input (for an MTA)",
        description="Deliver the message on standard input to USER's Maildir, as a local "
        "delivery agent for Postfix (mailbox_command), Exim (pipe transport) or procmail. "
        "Exit status: 0 delivered, 67 unknown user, 73 cannot store (too big, mailbox full, "
        "not writable), 75 temporary failure (the MTA retries), 78 bad configuration.",
    )
    _where(deliver_cmd)
    deliver_cmd.add_argument("user", help="recipient: a user or an address of one")
    deliver_cmd.set_defaults(func=_deliver)

    user = commands.add_parser("user", help="add, change, delete or list users")
    actions = user.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in [
        ("add", "add a user (an {ARGON2ID} password by default) and create the Maildir"),
        ("passwd", "set a user's password"),
        ("delete", "remove a user from the passwd-file (the Maildir stays)"),
        ("list", "list the users"),
    ]:
        sub = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        _where(sub)
        if action != "list":
            sub.add_argument("name", help="user name, e.g. alice@example.org")
        if action in ("add", "passwd"):
            sub.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from the first line of standard input",
            )
            sub.add_argument(
                "--scheme",
                choices=tuple(NEW_HASHES),
                help="how to store the password (default: [auth] password_scheme, ARGON2ID); "
                "SCRAM-SHA-256 lets clients log in without sending it",
            )
    user.set_defaults(func=_user)

    mailbox = commands.add_parser("mailbox", help="look at a user's Maildir")
    mailbox_actions = mailbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    stats = mailbox_actions.add_parser(
        "stats",
        help="messages, octets, oldest and newest message",
        description="Messages, octets (as POP3 reports them), oldest and newest message.",
    )
    _where(stats)
    stats.add_argument("name", help="user name")
    mailbox.set_defaults(func=_mailbox_stats)

    check = commands.add_parser(
        "check-config",
        help="check the configuration, passwd-file and certificate",
        description="Load the configuration, the passwd-file and the certificate, and say "
        "what is wrong. Exit status 0 when all is well, 78 otherwise.",
    )
    _where(check)
    check.set_defaults(func=_check_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"pop3d: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
