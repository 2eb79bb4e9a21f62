from __future__ import annotations

import pytest

from pop3d.ingress.delivery import without_from_line
from pop3d.quota import Quota, parse_size, quota_from_extra_fields


@pytest.mark.parametrize(
    ("text", "octets"),
    [
        ("0", 0),
        ("1024", 1024),
        ("512k", 512 << 10),
        ("100M", 100 << 20),
        ("2G", 2 << 30),
        ("1t", 1 << 40),
        ("10MB", 10 << 20),
        (" 7B ", 7),
    ],
)
def test_sizes(text: str, octets: int) -> None:
    assert parse_size(text) == octets


@pytest.mark.parametrize("text", ["", "lots", "1.5G", "-1", "10X"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_dovecot_quota_rules() -> None:
    fields = {
        "userdb_quota_rule": "*:storage=1G",
        "userdb_quota_rule2": "*:messages=1000",
        "userdb_mail": "maildir:~/Maildir",
    }
    assert quota_from_extra_fields(fields) == Quota(1 << 30, 1000)
    assert quota_from_extra_fields({"quota_rule": "*:storage=5M:messages=3"}) == Quota(5 << 20, 3)
    assert quota_from_extra_fields({"userdb_home": "/x"}) is None


def test_limits() -> None:
    quota = Quota(storage=100, messages=2)
    assert not quota.exceeded(100, 2)
    assert quota.exceeded(101, 1)
    assert quota.exceeded(10, 3)
    assert not Quota().exceeded(10**12, 10**6)
    assert Quota(100, 0).merged(Quota(0, 5)) == Quota(100, 5)
    assert Quota(100, 5).merged(None) == Quota(100, 5)


def test_without_from_line() -> None:
    def run(*chunks: bytes) -> bytes:
        return b"".join(without_from_line(chunks))

    assert (
        run(b"From a@b  Tue Dec  1 11:35:03 2026\nSubject: x\n\nbody\n") == b"Subject: x\n\nbody\n"
    )
    assert run(b"Fr", b"om a@b date\nS: x\n", b"\nbody\n") == b"S: x\n\nbody\n"
    assert run(b"Subject: x\n\nFrom here\n") == b"Subject: x\n\nFrom here\n"
    assert run(b"Fro", b"m: x\n") == b"From: x\n"
    assert run() == b""
