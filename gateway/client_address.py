"""Which address a web request comes from, for per-client limits and log lines.

The direct peer of the TCP connection is the client, unless it is one of
``web.trusted_proxies`` (addresses or CIDR networks). Only then is ``X-Forwarded-For``
believed, and only as far as trusted hops go: each proxy appends the address it saw, so the
list is read from the right, trusted hops are skipped, and the first untrusted hop is the
client ("rightmost untrusted"). Anything left of it was written by the client itself and is
never used. From any other peer the header is ignored: a client cannot choose the address its
limits are counted under. A hop that is not an address (garbage, ``unknown``) stops the walk
at the last address that could be vouched for.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Iterable, Sequence, Union

if TYPE_CHECKING:
    from aiohttp import web

IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

FORWARDED_FOR = "X-Forwarded-For"
MAX_FORWARDED_HOPS = 16
"""Hops read from the right of X-Forwarded-For at most: more proxies than this in front of one
gateway is a header built to cost CPU, not a deployment."""


def parse_networks(entries: Iterable[str]) -> tuple[IpNetwork, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` as networks; ValueError naming a bad entry."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network such as 10.0.0.0/8") from None
    return tuple(networks)


def parse_address(text: str | None) -> IpAddress | None:
    """An address from a peer or a forwarded hop (``[v6]:port`` and ``v4:port`` accepted); None
    when it is not one. IPv4-mapped IPv6 addresses are given as IPv4, so one client has one key."""
    if not text:
        return None
    value = text.strip()
    if value.startswith("["):  # [2001:db8::1]:443
        value = value[1:].split("]", 1)[0]
    elif value.count(":") == 1:  # 192.0.2.1:5678
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class ClientAddresses:
    """Resolves the client address of a request under a fixed set of trusted proxies."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self.trusted = parse_networks(trusted_proxies)

    def is_trusted(self, address: IpAddress) -> bool:
        return any(address in network for network in self.trusted)

    def resolve(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> str:
        """The client address for a connection from ``peer`` carrying these X-Forwarded-For values."""
        current = parse_address(peer)
        if current is None:
            return peer or "unknown"
        if not self.trusted or not self.is_trusted(current):
            return str(current)
        hops = [hop for value in forwarded_for for hop in value.split(",")][-MAX_FORWARDED_HOPS:]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                return str(current)
            current = address
            if not self.is_trusted(current):
                return str(current)
        return str(current)

    def of(self, request: web.BaseRequest) -> str:
        """The client address of an aiohttp request (its peer and X-Forwarded-For headers)."""
        return self.resolve(request.remote, request.headers.getall(FORWARDED_FOR, []))
