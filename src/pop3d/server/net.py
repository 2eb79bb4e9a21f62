"""Client addresses: parsing and network membership."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ..config import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(address: str) -> IPAddress | None:
    """The address, with IPv4-mapped IPv6 (::ffff:a.b.c.d) seen as the IPv4 it is."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def address_in(address: str, networks: Iterable[IPNetwork]) -> bool:
    ip = parse_address(address)
    return ip is not None and any(ip in net for net in networks)


def format_address(host: str, port: int) -> str:
    """host:port, IPv6 in brackets: [::1]:110."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
