"""The failed-login penalty: a delay before answering a failure, growing per client address.

The first failure from an address waits `failure_delay` seconds, each further one twice as
long, up to `max_failure_delay` (Dovecot's auth penalty works alike). An address that stays
quiet for `penalty_reset` seconds starts afresh. Only failures are delayed, so a correct
password is always accepted at once: a stranger guessing at an account cannot lock its owner
out. IPv6 clients are counted by their /64, which is what one subscriber usually holds.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from ..config import AuthConfig
from .net import parse_address

MAX_TRACKED = 100_000  # addresses remembered; the oldest are forgotten first


@dataclass(slots=True)
class _Record:
    failures: int
    last: float


class LoginPenalty:
    """`settings` may be replaced at any time (a reload); what was recorded stays."""

    def __init__(self, settings: AuthConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def failure(self, address: str) -> float:
        """Record a failed login from `address`; the seconds to wait before answering it."""
        key = self._key(address)
        if key is None:
            return 0.0
        now = self._clock()
        record = self._records.pop(key, None)
        if record is None or now - record.last >= self.settings.penalty_reset:
            record = _Record(0, now)
        record.failures += 1
        record.last = now
        self._records[key] = record
        while len(self._records) > MAX_TRACKED:
            self._records.popitem(last=False)
        return self._delay(record.failures)

    def active(self) -> int:
        """Addresses whose failures still count; forgets the others (the oldest come first:
        a record moves to the end at each failure)."""
        expired = self._clock() - self.settings.penalty_reset
        while self._records and next(iter(self._records.values())).last <= expired:
            self._records.popitem(last=False)
        return len(self._records)

    def current(self, address: str) -> float:
        """The delay the failures recorded for `address` call for now (0 for none), without
        recording anything."""
        key = self._key(address)
        record = self._records.get(key) if key is not None else None
        if record is None or self._clock() - record.last >= self.settings.penalty_reset:
            return 0.0
        return self._delay(record.failures)

    def _key(self, address: str) -> str | None:
        """Whom a failure counts against; None for an address exempt from the penalty."""
        ip = parse_address(address)
        if ip is None or any(ip in net for net in self.settings.trusted_networks):
            return None
        return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)

    def _delay(self, failures: int) -> float:
        delay = self.settings.failure_delay * 2.0 ** min(failures - 1, 32)
        return min(delay, self.settings.max_failure_delay)
