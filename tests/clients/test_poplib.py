"""Python's poplib (the standard library's POP3 client) over every transport."""

from __future__ import annotations

import poplib

import pytest

from tests.clients.conftest import (
    TRANSPORTS,
    Target,
    assert_mailbox,
    expected_sizes,
    on_defaults,
    through_haproxy,
)
from tests.clients.corpus import CORPUS


@pytest.fixture(autouse=True)
def long_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    # poplib refuses any line longer than poplib._MAXLINE (2048) with error_proto('line too
    # long'); the corpus has lines of 100,000 octets. getmail, which is built on poplib,
    # raises the same module constant to 1 MiB; we do what it does.
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 20)


def connect(target: Target) -> poplib.POP3:
    if target.transport == "tls":
        pop: poplib.POP3 = poplib.POP3_SSL(
            target.host, target.port, context=target.client_context(), timeout=10
        )
    else:
        pop = poplib.POP3(target.host, target.port, timeout=10)
    if target.transport == "stls":
        assert "STLS" in pop.capa()
        pop.stls(target.client_context())
        assert "STLS" not in pop.capa()
    elif target.tls is None:  # the plain server has no TLS to offer
        assert "STLS" not in pop.capa()
    return pop


def fetch_all(target: Target, *, delete: bool) -> list[bytes]:
    pop = connect(target)
    pop.user(target.user)
    pop.pass_(target.password)
    count, octets = pop.stat()
    sizes = expected_sizes()
    assert (count, octets) == (len(CORPUS), sum(sizes))
    _, listing, _ = pop.list()
    # The server's order is delivery order (oldest first), so LIST matches the corpus.
    assert listing == [f"{i} {size}".encode() for i, size in enumerate(sizes, 1)]
    messages = []
    for i in range(1, count + 1):
        _, lines, received = pop.retr(i)
        # poplib strips each CRLF and undoes the byte-stuffing; `received` counts the octets
        # it read, less one per stuffed dot: exactly the LIST size.
        assert received == sizes[i - 1], (i, received)
        messages.append(b"".join(line + b"\r\n" for line in lines))
        if delete:
            pop.dele(i)
    pop.quit()
    return messages


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
def test_poplib_keep(target: Target) -> None:
    assert_mailbox(fetch_all(target, delete=False), f"poplib over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
def test_poplib_delete(target: Target) -> None:
    assert_mailbox(fetch_all(target, delete=True), f"poplib over {target.transport}")
    target.assert_emptied()


@pytest.mark.parametrize("target", TRANSPORTS, indirect=True)
def test_poplib_top(target: Target) -> None:
    """TOP n 0 gives exactly the header and the blank line of each message."""
    pop = connect(target)
    pop.user(target.user)
    pop.pass_(target.password)
    for i, (name, data) in enumerate(CORPUS, 1):
        _, lines, _ = pop.top(i, 0)
        header = data.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0] + b"\n\n"
        assert b"".join(line + b"\n" for line in lines) == header, name
    pop.quit()
    target.assert_unchanged()


@pytest.mark.parametrize("target", on_defaults(), indirect=True)
def test_poplib_on_its_defaults(target: Target) -> None:
    # poplib has no SASL and never picks a method itself: user() and pass_() are its way in
    # (apop() only with an APOP greeting, which none of these servers sends).
    assert_mailbox(fetch_all(target, delete=False), f"poplib over {target.transport}")
    target.assert_unchanged()


@pytest.mark.parametrize("target", through_haproxy(), indirect=True)
def test_poplib_through_haproxy(target: Target) -> None:
    assert_mailbox(fetch_all(target, delete=False), f"poplib through HAProxy, {target.transport}")
    target.assert_unchanged()
