"""The `pop3d` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .auth.schemes import hash_argon2id
from .config import Config, ConfigError, load_config
from .server import Pop3Server
from .store.maildir import deliver
from .tls import generate_self_signed

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
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    passwd = data_dir / "users.passwd"
    passwd.write_text(f"demo:{hash_argon2id(password.encode())}::::::\n")
    passwd.chmod(0o600)
    deliver(data_dir / "mail" / "demo" / "Maildir", [_WELCOME.encode()])
    (data_dir / "tls").mkdir(mode=0o700, exist_ok=True)
    generate_self_signed(data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem")
    config_path.write_text(_DEFAULT_CONFIG)
    print(f"Created {data_dir}/ with user 'demo', password: {password}")
    print("(the password is shown only this once; it is stored hashed in users.passwd)")
    return config_path


def _serve(args: argparse.Namespace) -> int:
    config_path: Path = args.config or bootstrap_data_dir(args.data_dir)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"pop3d: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG
    _setup_logging(config)
    try:
        asyncio.run(_run(config, config_path))
    except OSError as exc:
        print(f"pop3d: cannot start: {exc}", file=sys.stderr)
        return 71  # EX_OSERR
    return 0


async def _run(config: Config, config_path: Path) -> None:
    server = Pop3Server(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    loop.add_signal_handler(signal.SIGHUP, _reload, server, config_path)
    log.info("pop3d %s ready", __version__)
    await server.serve_forever()
    log.info("stopped")


def _reload(server: Pop3Server, config_path: Path) -> None:
    """SIGHUP: re-read the config and the certificate; on any error keep what runs."""
    try:
        server.reload(load_config(config_path))
    except (ConfigError, OSError) as exc:
        log.error("reload failed, keeping the running configuration: %s", exc)


def _setup_logging(config: Config) -> None:
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
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
    where = serve.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, help="TOML configuration file")
    where.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"directory of the embedded default (default: ./{DEFAULT_DATA_DIR})",
    )
    serve.set_defaults(func=_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
