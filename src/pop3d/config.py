"""The TOML configuration, as frozen dataclasses.

Every section is a dataclass below and every key one of its fields, with its default and its
documentation. Loading refuses an unknown section or key and a value of the wrong type or out of
range, naming it, before anything listens. Relative paths are relative to the config file.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from string import Formatter
from typing import Any

from .auth.sasl import MECHANISMS
from .auth.schemes import NEW_HASHES
from .quota import Quota, parse_size
from .store.legacy_uidl import READERS as UIDL_READERS


class ConfigError(Exception):
    pass


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOG_LEVELS = ("debug", "info", "warning", "error")


class ByteSize(int):
    """Octets; in the file an integer or a string such as "100M"."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A TCP address, or the path of a unix socket."""

    address: Address | None
    path: Path | None

    @classmethod
    def parse(cls, text: str, base: Path) -> Endpoint:
        if "/" in text and not text.startswith("["):
            return cls(None, base / text)
        return cls(Address.parse(text), None)

    def __str__(self) -> str:
        return str(self.path) if self.path else str(self.address)


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{text!r} is not host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            ipaddress.IPv6Address(host)
        elif ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, as [::1]:110")
        if not host:
            raise ValueError(f"{text!r} has no host")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _doc(text: str, **extra: Any) -> dict[str, Any]:
    return {"doc": text, **extra}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: tuple[Address, ...] = field(
        default=(Address("127.0.0.1", 1110),),
        metadata=_doc("Plain POP3 listeners, host:port (IPv6 as [::1]:110)."),
    )
    listen_tls: tuple[Address, ...] = field(
        default=(), metadata=_doc("Implicit TLS listeners (RFC 8314, port 995 style); need [tls].")
    )
    greeting: str = field(default="POP3 server ready.", metadata=_doc("Text after +OK on connect."))
    implementation: str | None = field(
        default=None, metadata=_doc("Sent as CAPA IMPLEMENTATION when set (off by default).")
    )
    shutdown_timeout: float = field(
        default=30.0,
        metadata=_doc("Seconds sessions get to finish after SIGTERM.", minimum=0),
    )
    log_level: str | None = field(
        default=None,
        metadata=_doc("Deprecated: [log] level.", choices=LOG_LEVELS),
    )
    user: str | None = field(
        default=None,
        metadata=_doc("The account to serve as, once listening (needed when started as root)."),
    )
    group: str | None = field(
        default=None, metadata=_doc("Its group; default: the account's primary group.")
    )
    control_socket: Path | None = field(
        default=None,
        metadata=_doc("Unix socket for `pop3d who` and `pop3d kick` (mode 0600). Default off."),
    )
    proxy_networks: tuple[IPNetwork, ...] = field(
        default=(),
        metadata=_doc("Proxies whose connections begin with a PROXY protocol header (v1, v2)."),
    )
    event_loop: str = field(
        default="auto",
        metadata=_doc(
            "asyncio, uvloop, or auto (uvloop when installed: `pip install pop3d[uvloop]`).",
            choices=("auto", "asyncio", "uvloop"),
        ),
    )
    workers: int = field(
        default=1,
        metadata=_doc(
            "Processes serving the same listeners (one per core uses them all).", minimum=1
        ),
    )
    io_threads: int = field(
        default=16, metadata=_doc("Threads for Maildir scans and reads.", minimum=1)
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str = field(
        default="text",
        metadata=_doc("text, or json: one JSON object per line.", choices=("text", "json")),
    )
    level: str = field(
        default="info", metadata=_doc("debug, info, warning or error.", choices=LOG_LEVELS)
    )


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    listen: Address | None = field(
        default=None,
        metadata=_doc("host:port serving GET /metrics for Prometheus. Default off."),
    )


@dataclass(frozen=True, slots=True)
class AuthConfig:
    backend: str = field(
        default="passwd-file",
        metadata=_doc(
            "Where users live: passwd-file or postgresql.", choices=("passwd-file", "postgresql")
        ),
    )
    passwd_file: Path | None = field(
        default=None,
        metadata=_doc("Dovecot-style passwd-file with the users (backend = passwd-file)."),
    )
    apop: bool = field(
        default=False,
        metadata=_doc("Offer APOP (needs {PLAIN} passwords in the passwd-file)."),
    )
    hash_threads: int = field(
        default=os.cpu_count() or 2,
        metadata=_doc("Threads verifying passwords (default: one per core).", minimum=1),
    )
    mechanisms: tuple[str, ...] = field(
        default=("PLAIN", "LOGIN", "SCRAM-SHA-256", "OAUTHBEARER", "XOAUTH2"),
        metadata=_doc(
            "SASL mechanisms AUTH may offer; one that needs a stored secret (SCRAM-SHA-256) "
            "is offered only while every user has a password it can use, OAUTHBEARER and "
            "XOAUTH2 only with [oauth2].",
            choices=tuple(MECHANISMS),
        ),
    )
    password_scheme: str = field(
        default="ARGON2ID",
        metadata=_doc(
            "Scheme of the passwords `pop3d user add|passwd` writes.", choices=tuple(NEW_HASHES)
        ),
    )
    cleartext_networks: tuple[IPNetwork, ...] = field(
        default=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")),
        metadata=_doc("Networks where passwords may cross an unencrypted link; [] for none."),
    )
    trusted_networks: tuple[IPNetwork, ...] = field(
        default=(), metadata=_doc("Networks exempt from the failed-login delay.")
    )
    failure_delay: float = field(
        default=2.0, metadata=_doc("Seconds before answering a failed login.", minimum=0)
    )
    max_failure_delay: float = field(
        default=15.0,
        metadata=_doc("Cap of the delay as failures from one address accumulate.", minimum=0),
    )
    penalty_reset: float = field(
        default=900.0,
        metadata=_doc("Seconds without a failure after which an address starts afresh.", minimum=1),
    )
    max_auth_failures: int = field(
        default=3, metadata=_doc("Failed logins that close a session.", minimum=1)
    )


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert: Path | None = field(
        default=None, metadata=_doc("PEM certificate, chain allowed (leaf first).")
    )
    key: Path | None = field(default=None, metadata=_doc("PEM private key of the certificate."))


@dataclass(frozen=True, slots=True)
class StoreConfig:
    backend: str = field(
        default="maildir",
        metadata=_doc(
            "Where mail lives: maildir, mbox or postgresql.",
            choices=("maildir", "mbox", "postgresql"),
        ),
    )


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    dsn: str | None = field(
        default=None,
        metadata=_doc(
            "libpq conninfo or URI; the password from a passfile (PGPASSFILE), not here.",
            required=True,
        ),
    )
    pool_min: int = field(default=1, metadata=_doc("Connections kept open.", minimum=0))
    pool_max: int = field(default=10, metadata=_doc("Connections at most.", minimum=1))
    lease_ttl: float = field(
        default=60.0,
        metadata=_doc(
            "Seconds a maildrop lease lasts unless renewed (every third of it).", minimum=3
        ),
    )
    statement_timeout: float = field(
        default=10.0,
        metadata=_doc("Seconds a statement may run; 0: the server's (set it on the role "
                      "behind PgBouncer).", minimum=0),
    )  # fmt: skip
    connect_timeout: float = field(
        default=5.0, metadata=_doc("Seconds to wait for a connection.", minimum=1)
    )
    prepared_statements: bool = field(
        default=True,
        metadata=_doc("Server-side prepared statements (false behind PgBouncer before 1.21)."),
    )


@dataclass(frozen=True, slots=True)
class MaildirConfig:
    path: str | None = field(
        default=None,
        metadata=_doc(
            "Maildir of each user; {user} is the login, {local} and {domain} its parts, "
            "{home} the passwd-file's home field. Required with [store] backend = maildir.",
            template=True,
        ),
    )
    uidl_format: str = field(
        default="unique",
        metadata=_doc(
            "UIDLs: unique (pop3d's own), dovecot or courier (keep what those served).",
            choices=tuple(UIDL_READERS),
        ),
    )


@dataclass(frozen=True, slots=True)
class MboxConfig:
    path: str | None = field(
        default=None,
        metadata=_doc(
            "mbox of each user (placeholders as for [maildir] path), e.g. /var/mail/{user}. "
            "Required with [store] backend = mbox.",
            template=True,
        ),
    )
    format: str = field(
        default="mboxo",
        metadata=_doc(
            "How From lines in bodies are quoted: mboxo (Postfix, Exim) or mboxrd.",
            choices=("mboxo", "mboxrd"),
        ),
    )


@dataclass(frozen=True, slots=True)
class LmtpConfig:
    listen: tuple[Endpoint, ...] = field(
        default=(),
        metadata=_doc("LMTP listeners (RFC 2033): host:port or a unix socket path. Default off."),
    )
    socket_user: str | None = field(
        default=None, metadata=_doc("Owner of the unix sockets; default: [server] user.")
    )
    socket_group: str | None = field(
        default=None, metadata=_doc("Their group; default: that owner's primary group.")
    )
    socket_mode: int = field(
        default=0o666,
        metadata=_doc("Their mode, e.g. 0o660 (TOML octal). Default 0o666.", minimum=0),
    )


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    max_message_size: ByteSize = field(
        default=ByteSize(50 << 20),
        metadata=_doc("Largest message accepted by LMTP and `pop3d deliver`.", minimum=1),
    )
    quota_storage: ByteSize = field(
        default=ByteSize(0), metadata=_doc("Default per-user quota in octets; 0 for none.")
    )
    quota_messages: int = field(
        default=0, metadata=_doc("Default per-user quota in messages; 0 for none.", minimum=0)
    )
    quota_full_tempfail: bool = field(
        default=False,
        metadata=_doc("Over quota: answer temporarily (452, exit 75) instead of permanently."),
    )
    recipient_delimiter: str = field(
        default="+", metadata=_doc('alice+tag@example.org delivers to alice; "" for none.')
    )


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_line_length: int = field(
        default=2048,
        metadata=_doc(
            "Longest command line, octets (RFC 2449 asks for 255 at least).", minimum=255
        ),
    )
    max_bad_commands_authorization: int = field(
        default=3,
        metadata=_doc("Bad commands in a row before login that close the session.", minimum=1),
    )
    max_bad_commands_transaction: int = field(
        default=20,
        metadata=_doc("Bad commands in a row after login that close the session.", minimum=1),
    )
    idle_timeout_authorization: float = field(
        default=60.0, metadata=_doc("Seconds of silence allowed before login.", minimum=1)
    )
    login_timeout: float = field(
        default=120.0, metadata=_doc("Seconds a connection has to log in, in all.", minimum=1)
    )
    max_sasl_line_length: int = field(
        default=65536,
        metadata=_doc("Longest SASL response line, octets (OAuth tokens are long).", minimum=16384),
    )
    max_connections: int = field(
        default=10000, metadata=_doc("Open connections for the whole server.", minimum=1)
    )
    max_connections_per_ip: int = field(
        default=100, metadata=_doc("Open connections from one address; 0 for no cap.", minimum=0)
    )
    max_tls_handshakes: int = field(
        default=500, metadata=_doc("TLS handshakes in progress at once.", minimum=1)
    )
    tls_handshake_timeout: float = field(
        default=30.0, metadata=_doc("Seconds a TLS handshake may take.", minimum=1)
    )
    proxy_header_timeout: float = field(
        default=3.0,
        metadata=_doc("Seconds a proxy has to send its PROXY header.", minimum=0.1),
    )
    idle_timeout_transaction: float = field(
        default=600.0,
        metadata=_doc(
            "Seconds of silence allowed after login (RFC 1939: 600 at least).", minimum=600
        ),
    )


@dataclass(frozen=True, slots=True)
class OAuth2Config:
    issuer: str | None = field(
        default=None,
        metadata=_doc("The identity provider's issuer (the tokens' `iss`).", required=True),
    )
    audience: str | None = field(
        default=None, metadata=_doc("The `aud` a token must name (recommended).")
    )
    username_claim: str = field(
        default="email", metadata=_doc("The claim that names the user (e.g. preferred_username).")
    )
    jwks: str | None = field(
        default=None,
        metadata=_doc("The provider's keys: a JWKS file, or its https URL.", path_or_url=True),
    )
    introspection_url: str | None = field(
        default=None,
        metadata=_doc("Instead of jwks: an RFC 7662 introspection endpoint.", url=True),
    )
    client_id: str | None = field(
        default=None, metadata=_doc("Our client id at the introspection endpoint.")
    )
    client_secret_file: Path | None = field(
        default=None, metadata=_doc("A file holding our client secret there.")
    )
    required_scope: str | None = field(
        default=None, metadata=_doc("A scope every token must carry.")
    )
    clock_skew: float = field(
        default=60.0, metadata=_doc("Seconds of leeway for exp and nbf.", minimum=0)
    )
    ca_file: Path | None = field(
        default=None,
        metadata=_doc("CA certificates to trust for the provider's HTTPS (default: the system's)."),
    )
    timeout: float = field(
        default=5.0,
        metadata=_doc("Seconds a key fetch or an introspection may take in all.", minimum=0.1),
    )


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    maildir: MaildirConfig = field(default_factory=MaildirConfig)
    mbox: MboxConfig = field(default_factory=MboxConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    lmtp: LmtpConfig = field(default_factory=LmtpConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    oauth2: OAuth2Config | None = None  # OAUTHBEARER and XOAUTH2 need it
    postgresql: PostgresConfig | None = None  # a backend = "postgresql" needs it

    @property
    def log_level(self) -> str:
        """[log] level, or the deprecated [server] log_level when only that is set."""
        return self.server.log_level or self.log.level

    @property
    def passwd_file(self) -> Path:
        assert self.auth.passwd_file is not None, "checked at load"
        return self.auth.passwd_file

    @property
    def default_quota(self) -> Quota:
        return Quota(self.delivery.quota_storage, self.delivery.quota_messages)

    @property
    def tls_enabled(self) -> bool:
        return self.tls.cert is not None

    @property
    def maildir_template(self) -> str:
        assert self.maildir.path is not None, "checked at load"
        return self.maildir.path


TEMPLATE_FIELDS = frozenset({"user", "local", "domain", "home"})


def load_config(path: Path) -> Config:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return build_config(data, path.resolve().parent)


def build_config(data: dict[str, Any], base: Path) -> Config:
    sections: dict[str, Any] = {}
    hints = typing.get_type_hints(Config)
    for name, value in data.items():
        if name not in hints:
            raise ConfigError(f"unknown section [{name}]")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
        kind = hints[name]
        sections[name] = _build_section(name, _optional(kind) or kind, value, base)
    for name, kind in hints.items():
        if name not in sections and not _optional(kind):
            sections[name] = kind()
        if sections.get(name) is not None:
            _check_required(name, sections[name])
    config = Config(**sections)
    _check_backends(config)
    if (config.tls.cert is None) != (config.tls.key is None):
        raise ConfigError("[tls] needs both cert and key")
    if config.server.listen_tls and not config.tls_enabled:
        raise ConfigError("[server] listen_tls needs [tls] cert and key")
    if config.server.group and not config.server.user:
        raise ConfigError("[server] group needs [server] user")
    if config.lmtp.socket_mode > 0o777:
        raise ConfigError("[lmtp] socket_mode: at most 0o777")
    _check_oauth2(config, "mechanisms" in data.get("auth", {}))
    return config


def _check_backends(config: Config) -> None:
    if config.store.backend == "maildir":
        if config.maildir.path is None:
            raise ConfigError("[maildir] path is required")
        _check_template(config.maildir.path)
    if config.store.backend == "mbox":
        if config.mbox.path is None:
            raise ConfigError("[mbox] path is required")
        _check_template(config.mbox.path, "mbox")
    if config.auth.backend == "passwd-file" and config.auth.passwd_file is None:
        raise ConfigError("[auth] passwd_file is required")
    uses = [f"[{s}] backend" for s, b in (("store", config.store.backend),
            ("auth", config.auth.backend)) if b == "postgresql"]  # fmt: skip
    if uses and config.postgresql is None:
        raise ConfigError(f"{uses[0]} = postgresql needs a [postgresql] section")
    pg = config.postgresql
    if pg is not None and pg.pool_min > pg.pool_max:
        raise ConfigError("[postgresql] pool_min is more than pool_max")


def _optional(hint: Any) -> Any:
    """The section type of an optional section (`X | None`), else None."""
    if typing.get_origin(hint) is types.UnionType:
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return None


def _check_oauth2(config: Config, mechanisms_given: bool) -> None:
    oauth2 = config.oauth2
    bearer = [m for m in config.auth.mechanisms if MECHANISMS[m].needs_oauth2]
    if oauth2 is None:
        if bearer and mechanisms_given:
            raise ConfigError(f"[auth] mechanisms: {bearer[0]} needs an [oauth2] section")
        return
    if (oauth2.jwks is None) == (oauth2.introspection_url is None):
        raise ConfigError("[oauth2] needs either jwks or introspection_url")
    if oauth2.introspection_url and not (oauth2.client_id and oauth2.client_secret_file):
        raise ConfigError("[oauth2] introspection_url needs client_id and client_secret_file")


def _build_section(section: str, kind: type, values: dict[str, Any], base: Path) -> Any:
    fields = {f.name: f for f in dataclasses.fields(kind)}
    hints = typing.get_type_hints(kind)
    parsed: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in fields:
            raise ConfigError(f"unknown key {key!r} in [{section}]")
        try:
            parsed[key] = _convert(hints[key], raw, base, fields[key].metadata)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[{section}] {key}: {exc}") from None
    return kind(**parsed)


def _check_required(section: str, value: Any) -> None:
    for f in dataclasses.fields(value):
        if f.metadata.get("required") and getattr(value, f.name) is None:
            raise ConfigError(f"[{section}] {f.name} is required")


def _convert(hint: Any, raw: Any, base: Path, meta: typing.Mapping[str, Any]) -> Any:
    if hint is ByteSize:
        if isinstance(raw, str):
            raw = parse_size(raw)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < meta.get("minimum", 0):
            raise ValueError(f"expected a size of at least {meta.get('minimum', 0)} octets")
        return ByteSize(raw)
    if hint == IPNetwork:
        if not isinstance(raw, str):
            raise TypeError("expected a network such as 10.0.0.0/8")
        return ipaddress.ip_network(raw, strict=False)
    origin = typing.get_origin(hint)
    if origin is types.UnionType:  # X | None
        (inner,) = (a for a in typing.get_args(hint) if a is not type(None))
        return _convert(inner, raw, base, meta)
    if origin is tuple:
        if not isinstance(raw, list):
            raise TypeError("expected a list")
        (item,) = typing.get_args(hint)[:1]
        return tuple(_convert(item, r, base, meta) for r in raw)
    if hint is bool:
        if not isinstance(raw, bool):
            raise TypeError("expected true or false")
        return raw
    if hint in (int, float):
        if (
            isinstance(raw, bool)
            or not isinstance(raw, int | float)
            or (hint is int and not isinstance(raw, int))
        ):
            raise TypeError(f"expected a{'n integer' if hint is int else ' number'}")
        minimum = meta.get("minimum")
        if minimum is not None and raw < minimum:
            raise ValueError(f"must be at least {minimum}")
        return hint(raw)
    if not isinstance(raw, str):
        raise TypeError("expected a string")
    if hint is Path:
        return base / raw
    if hint is Address:
        return Address.parse(raw)
    if hint is Endpoint:
        return Endpoint.parse(raw, base)
    if meta.get("url") or (meta.get("path_or_url") and "://" in raw):
        return _check_url(raw)
    if meta.get("path_or_url"):
        return str(base / raw)
    choices = meta.get("choices")
    if choices and raw not in choices:
        raise ValueError(f"must be one of {', '.join(choices)}")
    if meta.get("template"):
        return raw if os.path.isabs(raw) or raw.startswith("{home}") else str(base / raw)
    return raw


def _check_url(url: str) -> str:
    """https, or http to this host only: tokens and secrets cross this link."""
    parts = urllib.parse.urlsplit(url)
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError(f"{url!r}: an https URL is needed (http only to localhost)")
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    return url


def _check_template(template: str, section: str = "maildir") -> None:
    try:
        names = {name for _, name, _, _ in Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"[{section}] path: {exc}") from None
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        raise ConfigError(
            f"[{section}] path: unknown placeholder {{{sorted(unknown)[0]}}}; "
            f"use {', '.join('{' + n + '}' for n in sorted(TEMPLATE_FIELDS))}"
        )
