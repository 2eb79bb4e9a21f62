"""Prometheus metrics, with prometheus-client.

Each server (each worker) counts in its own `Metrics`. `pop3d serve` runs prometheus-client in
its multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, set by the supervisor before anything
imports prometheus_client): each worker's values live in files of that directory, and the
supervisor's `/metrics` adds them up, so the figures are the whole server's whichever worker
served. Gauges count live workers only (`livesum`). No label holds a user name or an address:
those would be unbounded, and private.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess

from .. import __version__

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LOGIN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self.connections = Counter(
            "pop3d_connections", "Connections accepted.", ["listener", "tls"], registry=registry
        )
        self.connections_open = Gauge(
            "pop3d_connections_open", "Connections open now.", registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.sessions_logged_in = Gauge(
            "pop3d_sessions_logged_in", "Sessions in the TRANSACTION state now.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.logins = Counter(
            "pop3d_logins", "Login attempts, by outcome and mechanism (USER, APOP or SASL's).",
            ["result", "mechanism"], registry=registry,
        )  # fmt: skip
        self.login_duration = Histogram(
            "pop3d_login_duration_seconds",
            "From a login's first command to its verdict, password verification included "
            "(the failed-login delay is not).",
            buckets=LOGIN_BUCKETS, registry=registry,
        )  # fmt: skip
        self.sessions_closed = Counter(
            "pop3d_sessions_closed", "Sessions ended, by reason.", ["reason"], registry=registry
        )
        self.messages_retrieved = Counter(
            "pop3d_messages_retrieved", "Messages sent by RETR or TOP.", registry=registry
        )
        self.messages_deleted = Counter(
            "pop3d_messages_deleted", "Messages deleted at UPDATE.", registry=registry
        )
        self.bytes_sent = Counter(
            "pop3d_bytes_sent", "Octets sent to POP3 clients.", registry=registry
        )
        self.maildrop_in_use = Counter(
            "pop3d_maildrop_in_use", "Logins refused with [IN-USE].", registry=registry
        )
        self.penalized_addresses = Gauge(
            "pop3d_penalized_addresses", "Client addresses whose failed logins are delayed now.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.lmtp_deliveries = Counter(
            "pop3d_lmtp_deliveries", "LMTP deliveries, one per recipient, by outcome.",
            ["result"], registry=registry,
        )  # fmt: skip
        self.tls_handshake_failures = Counter(
            "pop3d_tls_handshake_failures", "TLS handshakes that failed (implicit and STLS).",
            registry=registry,
        )  # fmt: skip
        self.build_info = Gauge(
            "pop3d_build_info", "The version of pop3d running.", ["version"],
            registry=registry, multiprocess_mode="max",
        )  # fmt: skip
        self.build_info.labels(__version__).set(1)


def exposition(directory: Path) -> bytes:
    """The text format for the values every process wrote into `directory`."""
    registry = CollectorRegistry()
    _multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def forget_process(pid: int) -> None:
    """A worker is gone: its live gauges no longer count (its counters still do)."""
    _multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
