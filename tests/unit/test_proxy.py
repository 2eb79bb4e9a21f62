"""PROXY protocol headers (v1, v2): found exactly, whatever follows and however it arrives."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pop3d.server.proxy import (
    V2_SIGNATURE,
    Proxied,
    ProxyHeaderError,
    header_length,
    parse,
)


def v2(source: str, port: int, *, command: int = 0x21, tlvs: bytes = b"") -> bytes:
    """A v2 header as the spec lays it out: signature, version/command, family, length,
    addresses, TLVs."""
    ip = ipaddress.ip_address(source)
    if ip.version == 4:
        family = 0x11  # TCP over IPv4
        addresses = ip.packed + bytes([10, 0, 0, 2]) + struct.pack("!HH", port, 110)
    else:
        family = 0x21  # TCP over IPv6
        addresses = ip.packed + ipaddress.ip_address("::2").packed + struct.pack("!HH", port, 110)
    body = addresses + tlvs
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


SSL_TLV = bytes([0x20]) + struct.pack("!H", 5) + bytes([0x01]) + struct.pack("!I", 0)


def test_v1() -> None:
    header = b"PROXY TCP4 203.0.113.7 10.0.0.2 51234 110\r\n"
    assert header_length(header + b"USER alice\r\n") == len(header)
    assert parse(header) == Proxied("203.0.113.7", 51234, False)
    header6 = b"PROXY TCP6 2001:db8::7 2001:db8::2 51234 110\r\n"
    assert parse(header6) == Proxied("2001:db8::7", 51234, False)


def test_v2_and_its_ssl_tlv() -> None:
    plain = v2("203.0.113.7", 51234)
    assert header_length(plain + b"\x16\x03\x01") == len(plain)
    assert parse(plain) == Proxied("203.0.113.7", 51234, False)
    tls = v2("2001:db8::7", 4000, tlvs=SSL_TLV)
    assert parse(tls) == Proxied("2001:db8::7", 4000, True)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"USER alice\r\n", "no PROXY header"),
        (b"\x16\x03\x01\x02\x00\x01", "no PROXY header"),  # a ClientHello, no header
        (b"PROXY " + b"x" * 120, "longer than 107"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "a PROXY v2 header of"),
    ],
)
def test_no_header_or_one_too_long(data: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why):
        header_length(data)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (b"PROXY TCP4 300.0.0.1 10.0.0.2 1 110\r\n", "malformed"),
        (b"PROXY TCP4 1.2.3.4\r\n", "malformed"),
        (b"PROXY UNKNOWN\r\n", "no client address"),
        (v2("203.0.113.7", 1, command=0x20), "no client address (LOCAL)"),
        (v2("203.0.113.7", 1, command=0x2F), "malformed"),
    ],
)
def test_malformed_and_local_headers(header: bytes, why: str) -> None:
    with pytest.raises(ProxyHeaderError, match=why.replace("(", r"\(").replace(")", r"\)")):
        parse(header[: header_length(header)])


addresses = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))


@given(addresses, st.integers(1, 65535), st.booleans(), st.booleans(), st.binary(max_size=300),
       st.integers(1, 200))  # fmt: skip
def test_a_header_is_found_exactly_however_it_arrives(
    address: str, port: int, version2: bool, tls: bool, rest: bytes, step: int
) -> None:
    if version2:
        header = v2(address, port, tlvs=SSL_TLV if tls else b"")
    else:
        family = "TCP4" if ":" not in address else "TCP6"
        other = "10.0.0.2" if family == "TCP4" else "::2"
        header = f"PROXY {family} {address} {other} {port} 110\r\n".encode()
        tls = False
    data = header + rest
    found = None
    for end in range(0, len(data) + step, step):
        found = header_length(data[: min(end, len(data))])
        if found is not None:
            break
    assert found == len(header)
    assert parse(data[:found]) == Proxied(str(ipaddress.ip_address(address)), port, tls)
