"""Per-user quota: limits on a maildrop's octets and messages, checked at delivery."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE = re.compile(r"(\d+)\s*([bkmgt]?)b?", re.IGNORECASE)
_FACTORS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """`1048576`, `512k`, `100M`, `2G` (powers of 1024, as Dovecot reads them)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a size such as 100M")
    return int(match.group(1)) * _FACTORS[match.group(2).lower()]


@dataclass(frozen=True, slots=True)
class Quota:
    storage: int = 0  # octets; 0 for no limit
    messages: int = 0  # 0 for no limit

    def exceeded(self, octets: int, count: int) -> bool:
        """Whether a maildrop of `octets` and `count` messages is over this quota."""
        return bool(
            (self.storage and octets > self.storage) or (self.messages and count > self.messages)
        )

    def merged(self, override: Quota | None) -> Quota:
        """`override`'s limits where it sets them, ours elsewhere."""
        if override is None:
            return self
        return Quota(override.storage or self.storage, override.messages or self.messages)


def quota_from_extra_fields(fields: dict[str, str]) -> Quota | None:
    """Dovecot's `userdb_quota_rule=*:storage=1G` and `userdb_quota_rule2=*:messages=1000`."""
    storage = messages = 0
    for key, value in fields.items():
        if not re.fullmatch(r"(userdb_)?quota_rule\d*", key):
            continue
        _root, _, rule = value.partition(":")
        for part in rule.split(":"):
            name, _, amount = part.partition("=")
            if name == "storage":
                storage = parse_size(amount)
            elif name == "messages":
                messages = int(amount)
    return Quota(storage, messages) if storage or messages else None
