"""Which of the allowed SASL mechanisms to offer: never one that fails a user who has the
right password.

A mechanism that needs a secret stored on our side (SCRAM's keys) can only be completed for
users whose password is stored in a form it can use, and a client that chose it cannot fall
back to another (RFC 5802). So it is offered only while every user of the database has such
a password; the census of the database's schemes decides, each time it is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..base import SchemeCensus
from . import MECHANISMS


@dataclass(frozen=True, slots=True)
class MechanismOffer:
    offered: tuple[str, ...]
    left_out: tuple[tuple[str, str], ...] = ()  # (mechanism, why)

    def describe(self) -> str:
        text = "SASL mechanisms offered: " + (" ".join(self.offered) or "none")
        for name, why in self.left_out:
            text += f"; {name} left out: {why}"
        return text


def choose(
    allowed: Sequence[str], census: SchemeCensus | None, *, oauth2: bool = False
) -> MechanismOffer:
    """The mechanisms of `allowed` the database can complete for every user; `census` is
    None when the database could not be read. Bearer-token mechanisms need `oauth2` (an
    [oauth2] section); without one they are left out without a word, as nothing is amiss."""
    offered: list[str] = []
    left_out: list[tuple[str, str]] = []
    for name in allowed:
        if MECHANISMS[name].needs_oauth2 and not oauth2:
            continue
        needs = MECHANISMS[name].completes_from
        if needs is not None:
            if census is None:
                left_out.append((name, "the user database cannot be read"))
                continue
            lacking = census.without(needs)
            if lacking:
                users = sum(n for _, n in lacking)
                who = "1 user has" if users == 1 else f"{users} users have"
                schemes = ", ".join(f"{{{scheme}}} {n}" for scheme, n in lacking)
                left_out.append((name, f"{who} a password it cannot use ({schemes})"))
                continue
        offered.append(name)
    return MechanismOffer(tuple(offered), tuple(left_out))
