"""The PROXY protocol (v1 text, v2 binary) that HAProxy and other L4 balancers put before a
client's bytes, parsed by the proxy-protocol package. No I/O here.

Only a connection from `[server] proxy_networks` is asked for a header, and it must send
one: the address in it then stands for the peer everywhere (logs, the failed-login penalty,
the per-address cap, `cleartext_networks`, `trusted_networks`), and a v2 header whose SSL TLV
says the client spoke TLS to the proxy makes the session count as encrypted. A header that is
malformed, missing or LOCAL/UNKNOWN ends the connection before any greeting.

`header_length` finds where a header ends without taking a byte more: what follows is the
client's (a POP3 command, or the ClientHello for an implicit-TLS listener).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxyprotocol import (
    ProxyProtocolChecksumError,
    ProxyProtocolIncompleteError,
    ProxyProtocolSyntaxError,
)
from proxyprotocol.detect import ProxyProtocolDetect
from proxyprotocol.result import is_ipv4, is_ipv6

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107  # octets of the longest v1 line, CRLF included
V2_MAX = 16 + 4096  # a v2 header's addresses and TLVs: HAProxy sends a few dozen octets

_parser = ProxyProtocolDetect()


class ProxyHeaderError(Exception):
    """No usable PROXY header: the connection is closed; the text is for the log."""


@dataclass(frozen=True, slots=True)
class Proxied:
    address: str  # the client's, as the proxy saw it
    port: int
    tls: bool  # the client spoke TLS to the proxy (v2 PP2_TYPE_SSL, PP2_CLIENT_SSL)


def header_length(data: bytes) -> int | None:
    """The length of the header at the start of `data`, None while more is needed."""
    if data.startswith(V1_PREFIX):
        end = data.find(b"\r\n", 0, V1_MAX)
        if end >= 0:
            return end + 2
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("a PROXY v1 line longer than 107 octets")
        return None
    if data.startswith(V2_SIGNATURE):
        if len(data) < 16:
            return None
        length = 16 + int.from_bytes(data[14:16], "big")
        if length > V2_MAX:
            raise ProxyHeaderError(f"a PROXY v2 header of {length} octets")
        return length if len(data) >= length else None
    if V1_PREFIX.startswith(data[:6]) or V2_SIGNATURE.startswith(data[:12]):
        return None  # a beginning of either
    raise ProxyHeaderError("no PROXY header from a proxy")


def parse(header: bytes) -> Proxied:
    """The client a complete header (as `header_length` delimits it) names."""
    try:
        result = _parser.unpack(header)
    except (ProxyProtocolSyntaxError, ProxyProtocolChecksumError, ValueError) as exc:
        raise ProxyHeaderError(f"malformed PROXY header: {exc}") from None
    except ProxyProtocolIncompleteError:  # cannot be: the length was counted, but say so
        raise ProxyHeaderError("malformed PROXY header: shorter than it says") from None
    if not (is_ipv4(result) or is_ipv6(result)):
        kind = "LOCAL" if not result.proxied else "UNKNOWN"
        raise ProxyHeaderError(f"a PROXY header with no client address ({kind})")
    address, port = result.source
    tls = bool(result.tlv.ssl.has_ssl) if result.tlv else False
    return Proxied(str(address), int(port), tls)
