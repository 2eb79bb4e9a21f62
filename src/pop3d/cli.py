"""The `pop3d` command."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import getpass
import json
import logging
import os
import resource
import secrets
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, backends, logs
from .auth.base import AuthUnavailable, UserEditError
from .auth.sasl.offer import choose
from .auth.schemes import NEW_HASHES, hash_password
from .config import Config, ConfigError, OAuth2Config, PostgresConfig, load_config
from .daemon import control
from .daemon.privileges import (
    Account,
    AccountError,
    account,
    chown,
    drop_to,
    is_root,
    readable_by,
)
from .ingress.delivery import Deliverer, Outcome, without_from_line
from .principal import Principal, is_safe_user_name
from .store.base import StoreError
from .store.maildir import deliver

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

control_socket = "control.sock"     # for `pop3d who` and `pop3d kick`

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
    embedded = args.config is None
    config_path: Path = args.config or bootstrap_data_dir(args.data_dir)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise CommandError(str(exc), 78) from None
    logs.setup(config.log.format, config.log_level, process_id=config.server.workers > 1)
    if config.server.log_level is not None:
        log.warning("[server] log_level is deprecated and will go: use [log] level")
    serve_as = _serving_account(config, embedded)
    metrics_dir = None
    if config.metrics.listen is not None:
        # Before anything imports prometheus_client: the workers count into this directory
        # and the supervisor adds their files up.
        metrics_dir = Path(tempfile.mkdtemp(prefix="pop3d-metrics-"))
        chown(metrics_dir, serve_as)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        return _daemon(config, config_path, serve_as, metrics_dir)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serving_account(config: Config, embedded: bool) -> Account | None:
    """The account to serve as: [server] user, which root must name (never serve as root)."""
    if config.server.user is None:
        if is_root() and not embedded:
            raise CommandError(
                "started as root: [server] user must name the account to serve as "
                "(pop3d gives up root once it listens)",
                78,
            )
        if is_root():
            log.warning("serving as root: the embedded default is for trying pop3d out")
        return None
    try:
        target = account(config.server.user, config.server.group)
    except AccountError as exc:
        raise CommandError(str(exc), 78) from None
    if not is_root() and os.getuid() != target.uid:
        raise CommandError(
            f"[server] user: pop3d runs as uid {os.getuid()}, not as {target.name}, and only "
            "root can switch",
            78,
        )
    return target


def _daemon(
    config: Config, config_path: Path, serve_as: Account | None, metrics_dir: Path | None
) -> int:
    from .daemon import worker  # noqa: PLC0415 - see the imports
    from .daemon.supervisor import Supervisor  # noqa: PLC0415
    from .daemon.systemd import ActivationError, Notifier, listen_fds  # noqa: PLC0415
    from .server.listeners import bind, tcp, unix  # noqa: PLC0415
    from .tls import server_context  # noqa: PLC0415

    _raise_fd_limit()
    try:
        socket_owner = account(
            config.lmtp.socket_user, config.lmtp.socket_group, key="[lmtp] socket_user"
        ) if config.lmtp.socket_user else serve_as  # fmt: skip
        listeners = listen_fds()
    except (AccountError, ActivationError) as exc:
        raise CommandError(str(exc), 78) from None
    if listeners is None:
        try:
            listeners = bind(config, socket_owner)
        except OSError as exc:
            raise CommandError(f"cannot listen: {exc}", 71) from None  # EX_OSERR
    else:
        log.info("serving on the sockets systemd passed; [server] listen* and [lmtp] listen "
                 "are not used")  # fmt: skip
    control_socket = metrics_socket = None
    try:
        if config.server.control_socket is not None:
            key = "[server] control_socket"
            control_socket = unix(str(config.server.control_socket), 0o600, serve_as)
        if config.metrics.listen is not None:
            key = "[metrics] listen"
            metrics_socket = tcp(config.metrics.listen)
    except OSError as exc:
        listeners.close()
        raise CommandError(f"{key}: {exc.strerror or exc}", 78) from None
    tls_context = None
    if config.tls.cert and config.tls.key:
        try:  # read now: the key may be one only root can read
            tls_context = server_context(config.tls.cert, config.tls.key)
        except (OSError, ValueError) as exc:
            raise CommandError(f"[tls] cannot load {config.tls.cert}: {exc}", 78) from None
    _choose_event_loop(config.server.event_loop)
    backends.load_before_dropping_root(config)  # the workers need it
    if serve_as is not None and is_root():
        drop_to(serve_as)
    supervisor = Supervisor(
        config,
        lambda channel: worker.serve(config, config_path, listeners, channel, tls_context),
        listeners,
        control_socket=control_socket,
        metrics_socket=metrics_socket,
        metrics_dir=metrics_dir,
        notifier=Notifier(),
    )
    try:
        return supervisor.run()
    finally:
        if config.server.control_socket is not None:
            with contextlib.suppress(OSError):
                config.server.control_socket.unlink()


def _raise_fd_limit() -> None:
    """Every session holds a socket: allow as many files as the hard limit does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _deliver(args: argparse.Namespace) -> int:
    """A local delivery agent: one message on stdin, sysexits codes for the MTA."""
    try:
        config = _load(args)
    except CommandError as exc:
        print(f"pop3d deliver: {exc}", file=sys.stderr)
        return 75  # the MTA keeps the message and retries once the config is fixed
    logging.basicConfig(level=logging.WARNING, format="pop3d deliver: %(message)s")
    if is_root() and config.server.user:
        # As the server's account: every Maildir, message and lock made is then its own.
        backends.load_before_dropping_root(config)
        try:
            drop_to(account(config.server.user, config.server.group))
        except (AccountError, OSError) as exc:
            print(f"pop3d deliver: {exc}", file=sys.stderr)
            return 75
    with backends.opened(config) as found:
        deliverer = Deliverer(config, found.users, found.store)
        recipient = deliverer.recipient(args.user)
        if isinstance(recipient, Outcome):
            outcome = recipient
        else:
            stdin = sys.stdin.buffer
            message = without_from_line(iter(lambda: stdin.read(1 << 16), b""))
            outcome = deliverer.deliver(recipient, message)
    if outcome is not Outcome.DELIVERED:
        print(f"pop3d deliver: {outcome.reply(args.user)}", file=sys.stderr)
    return outcome.exit_code


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


def _owner(config: Config) -> Account | None:
    """Whom what root makes for the server belongs to: [server] user, when run as root."""
    if not is_root() or not config.server.user:
        return None
    try:
        return account(config.server.user, config.server.group)
    except AccountError as exc:
        raise CommandError(str(exc), 78) from None


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
    owner = _owner(config)
    try:
        with backends.opened(config, owner.gid if owner else None) as found:
            users = found.users
            match args.action:
                case "add":
                    _check_new_user(args.name)
                    users.add(args.name, _new_hash(args, config))
                    place = found.store.create(
                        Principal(args.name), (owner.uid, owner.gid) if owner else None
                    )
                    print(f"added {args.name}, {place}")
                case "passwd":
                    users.set_password(args.name, _new_hash(args, config))
                    print(f"password of {args.name} changed")
                case "delete":
                    users.delete(args.name)
                    print(f"deleted {args.name} (the mail is kept)")
                case "list":
                    for entry in sorted(users.users(), key=lambda e: e.name):
                        print(entry.name)
    except (UserEditError, AuthUnavailable, StoreError) as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"{exc.filename or ''}: {exc.strerror}") from None
    return 0


def _mailbox_stats(args: argparse.Namespace) -> int:
    config = _load(args)
    try:
        with backends.opened(config) as found:
            entry = found.users.lookup(args.name)
            if entry is None:
                raise CommandError(f"no user {args.name}", 67)
            stats = found.store.stats(entry.principal())
            place = found.store.where(entry.principal())
    except (AuthUnavailable, StoreError) as exc:
        raise CommandError(str(exc)) from None
    print(f"user: {args.name}")
    print(f"mailbox: {place}")
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
    try:
        with backends.opened(config) as found:
            if found.db is not None:
                print(f"PostgreSQL: schema version {found.db.run_blocking(schema_version)}")
            users = found.users
            count = users.check()
            print(f"{_users_source(config)}: {count} users")
            census = users.census()
            offer = choose(config.auth.mechanisms, census, oauth2=config.oauth2 is not None)
            print(offer.describe().partition(";")[0])
            for name, why in offer.left_out:
                print(f"warning: [auth] mechanisms allows {name}, which is not offered: {why}")
    except AuthUnavailable as exc:
        problems.append(str(exc))
    except Exception as exc:  # PostgreSQL down or wrong: said, not a traceback
        if not postgres_trouble(exc):
            raise
        problems.append(f"[postgresql] {exc}")
    if config.oauth2 is not None:
        problems += _check_oauth2(config.oauth2)
    if config.tls.cert and config.tls.key:
        from .tls import server_context  # noqa: PLC0415 - see the imports

        try:
            server_context(config.tls.cert, config.tls.key)
            print(f"certificate {config.tls.cert}: loads")
        except (OSError, ValueError) as exc:
            problems.append(f"[tls] cannot load {config.tls.cert}: {exc}")
    problems += _check_daemon(config)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        return 78
    print(f"{path}: OK")
    return 0


def _users_source(config: Config) -> str:
    if config.auth.backend == "postgresql":
        return "PostgreSQL users"
    return f"passwd-file {config.passwd_file}"


def postgres_trouble(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL's (only asked when PostgreSQL is in use)."""
    import psycopg  # noqa: PLC0415

    from .postgres import unavailable  # noqa: PLC0415 - psycopg only when used

    return unavailable(exc) or isinstance(exc, psycopg.Error)


async def schema_version(conn: Any) -> int:
    cur = await conn.execute(
        "SELECT coalesce(max(version), 0) FROM pop3d_schema "
        "WHERE to_regclass('pop3d_schema') IS NOT NULL"
    )
    row = await cur.fetchone()
    return int(row[0]) if row else 0


def _check_daemon(config: Config) -> list[str]:
    """The account to serve as, and what it must be able to read and write."""
    if config.server.user is None:
        if is_root():
            print("warning: [server] user is not set: `pop3d serve` as root will refuse to start")
        return []
    try:
        serve_as = account(config.server.user, config.server.group)
    except AccountError as exc:
        return [str(exc)]
    print(f"serves as {serve_as}")
    for key, path in (
        ("[tls] cert", config.tls.cert), ("[tls] key", config.tls.key),
        ("[auth] passwd_file", config.passwd_file),
    ):  # fmt: skip
        if path is not None and not readable_by(path, serve_as):
            reload = " at SIGHUP" if key.startswith("[tls]") else ""
            print(f"warning: {key} {path} cannot be read by {serve_as.name}{reload} "
                  "(make it readable by the account or its group)")  # fmt: skip
    control = config.server.control_socket
    if control is not None and not control.parent.is_dir():
        return [f"[server] control_socket: no directory {control.parent}"]
    return []


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


def _control(args: argparse.Namespace, message: dict[str, object]) -> dict[str, Any]:
    config = _load(args)
    path = config.server.control_socket
    if path is None:
        raise CommandError(f"{_config_path(args)}: no [server] control_socket", 78)
    try:
        return control.request(path, message)
    except control.ControlError as exc:
        raise CommandError(str(exc), 69) from None  # EX_UNAVAILABLE


def _who(args: argparse.Namespace) -> int:
    answer = _control(args, {"op": "who"})
    sessions = answer["sessions"]
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    columns = ("user", "peer", "listener", "tls", "state", "since", "bytes_out")
    rows = [[str(s.get(c) if s.get(c) is not None else "-") for c in columns] for s in sessions]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    for row in [[c.upper() for c in columns], *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if answer.get("incomplete"):
        print("(a worker did not answer in time: its sessions are missing)", file=sys.stderr)
    return 0


def _kick(args: argparse.Namespace) -> int:
    answer = _control(args, {"op": "kick", "user": args.name})
    if args.json:
        print(json.dumps(answer))
    else:
        kicked = answer["kicked"]
        print(f"kicked {kicked} session{'s' if kicked != 1 else ''} of {args.name}")
    return 0


def _postgresql(config: Config, path: Path) -> PostgresConfig:
    if config.postgresql is None:
        raise CommandError(f"{path}: no [postgresql] section", 78)
    return config.postgresql


def _db_init(args: argparse.Namespace) -> int:
    config = _load(args)
    from .postgres import MIGRATIONS, database_in_thread, migrate  # noqa: PLC0415

    try:
        with database_in_thread(_postgresql(config, _config_path(args))) as db:
            applied = db.run_blocking(migrate)
    except Exception as exc:  # PostgreSQL's trouble is said, not a traceback
        if not postgres_trouble(exc):
            raise
        raise CommandError(f"[postgresql] {exc}", 69) from None
    done = f"applied {', '.join(map(str, applied))}" if applied else "nothing to do"
    print(f"schema at version {len(MIGRATIONS)} ({done})")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    try:
        old = load_config(Path(args.source))
    except ConfigError as exc:
        raise CommandError(f"--from: {exc}", 78) from None
    new = _load(args)
    if old.store.backend != "maildir":
        raise CommandError(f"--from {args.source}: its [store] backend is not maildir", 78)
    if new.store.backend != "postgresql":
        raise CommandError(f"{_config_path(args)}: its [store] backend is not postgresql", 78)
    from . import migrate  # noqa: PLC0415 - psycopg only when used

    try:
        with backends.opened(old) as before, backends.opened(new) as after:
            assert after.db is not None
            if args.verify:
                same = after.db.wait(migrate.verify(before, after, args.user, print))
                return 0 if same else 1
            after.db.wait(migrate.migrate(before, after, args.user, print))
    except (ValueError, AuthUnavailable, StoreError) as exc:
        raise CommandError(str(exc)) from None
    except Exception as exc:
        if not postgres_trouble(exc):
            raise
        raise CommandError(f"[postgresql] {exc}", 69) from None
    return 0


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
        description="Deliver the message on standard input to USER's mailbox (the store "
        "[store] backend names), as a local "
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

    who = commands.add_parser(
        "who",
        help="list the sessions of a running pop3d",
        description="List the sessions of a running pop3d (every worker's), through "
        "[server] control_socket.",
    )
    _where(who)
    who.add_argument("--json", action="store_true", help="print JSON")
    who.set_defaults(func=_who)
    kick = commands.add_parser(
        "kick",
        help="end a user's sessions",
        description="End USER's sessions in a running pop3d. Their DELE marks are dropped, as "
        "for a lost connection: nothing is deleted.",
    )
    _where(kick)
    kick.add_argument("name", help="user name")
    kick.add_argument("--json", action="store_true", help="print JSON")
    kick.set_defaults(func=_kick)

    db = commands.add_parser("db", help="the PostgreSQL schema")
    db_actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = db_actions.add_parser(
        "init",
        help="create or upgrade the schema",
        description="Create the PostgreSQL schema [postgresql] names, or apply the migrations "
        "it lacks. Running it again, or on two nodes at once, is safe.",
    )
    _where(init)
    db.set_defaults(func=_db_init)

    migration = commands.add_parser(
        "migrate",
        help="copy users and Maildirs into PostgreSQL",
        description="Copy the users and Maildirs of the --from configuration into the "
        "PostgreSQL store of --config, keeping each UIDL and size as the old server gave "
        "them. Old mail is only read. A rerun copies only what is missing.",
    )
    migration.add_argument("--from", dest="source", required=True, metavar="OLD.toml",
                           help="the old (Maildir) configuration")  # fmt: skip
    _where(migration)
    migration.add_argument("--user", action="append", default=[], metavar="NAME",
                           help="only this user (again for more)")  # fmt: skip
    migration.add_argument(
        "--verify", action="store_true", help="compare UIDL lists and contents, copy nothing"
    )
    migration.set_defaults(func=_migrate)

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
