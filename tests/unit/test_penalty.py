from __future__ import annotations

import ipaddress

from pop3d.config import AuthConfig
from pop3d.server.penalty import LoginPenalty


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def penalty(**settings: object) -> tuple[LoginPenalty, Clock]:
    clock = Clock()
    return LoginPenalty(AuthConfig(**settings), clock), clock  # type: ignore[arg-type]


def test_delay_doubles_up_to_the_cap() -> None:
    p, _ = penalty()
    assert [p.failure("192.0.2.1") for _ in range(6)] == [2, 4, 8, 15, 15, 15]


def test_addresses_are_counted_apart() -> None:
    p, _ = penalty()
    p.failure("192.0.2.1")
    p.failure("192.0.2.1")
    assert p.failure("192.0.2.2") == 2


def test_ipv6_is_counted_by_its_64() -> None:
    p, _ = penalty()
    p.failure("2001:db8:1:2::1")
    assert p.failure("2001:db8:1:2:ffff::9") == 4
    assert p.failure("2001:db8:1:3::1") == 2


def test_ipv4_mapped_addresses_are_their_ipv4() -> None:
    p, _ = penalty()
    p.failure("::ffff:192.0.2.7")
    assert p.failure("192.0.2.7") == 4


def test_quiet_period_resets() -> None:
    p, clock = penalty(penalty_reset=60.0)
    p.failure("192.0.2.1")
    p.failure("192.0.2.1")
    clock.now += 59
    assert p.failure("192.0.2.1") == 8
    clock.now += 61
    assert p.failure("192.0.2.1") == 2


def test_trusted_networks_and_unparsable_peers_pay_nothing() -> None:
    p, _ = penalty(trusted_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    assert p.failure("10.1.2.3") == 0
    assert p.failure("unix-socket") == 0


def test_settings_can_change_and_history_stays() -> None:
    p, _ = penalty()
    p.failure("192.0.2.1")
    p.settings = AuthConfig(failure_delay=1.0, max_failure_delay=100.0)
    assert p.failure("192.0.2.1") == 2.0


def test_a_very_long_siege_does_not_overflow() -> None:
    p, _ = penalty()
    for _ in range(5000):
        delay = p.failure("192.0.2.1")
    assert delay == 15


def test_current_tells_the_delay_without_recording() -> None:
    p, clock = penalty()
    assert p.current("192.0.2.1") == 0
    p.failure("192.0.2.1")
    p.failure("192.0.2.1")
    assert p.current("192.0.2.1") == 4
    assert p.current("192.0.2.1") == 4
    assert p.current("192.0.2.2") == 0
    clock.now += 900
    assert p.current("192.0.2.1") == 0


def test_current_is_zero_for_trusted_networks() -> None:
    p, _ = penalty(trusted_networks=(ipaddress.ip_network("10.0.0.0/8"),))
    p.failure("10.1.2.3")
    assert p.current("10.1.2.3") == 0
