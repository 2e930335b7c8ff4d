"""Where a webhook may be sent (RULES-v2 §2): an http(s) URL whose host resolves only to public
addresses, never to a loopback, private, link-local, shared, reserved or cloud-metadata one, so an
endpoint cannot point the server at itself or its neighbours. Checked when an endpoint is saved and
again at each delivery (DNS can change), and the delivery connects to the address checked, so a
second look-up cannot send it elsewhere. TIHUO_WEBHOOK_ALLOW_PRIVATE=true lifts the address rule.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

URL_MAX = 2000
# the metadata services of the clouds; most sit in ranges refused anyway, listed so none slips by
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254")
)
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """The URL may not be used; the message says why (it names no secret)."""


@dataclass(frozen=True)
class Target:
    """A URL and the address checked for its host: the delivery connects there."""

    url: httpx.URL
    address: str


def refused_address(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address in METADATA or not address.is_global or address.is_multicast


def parse(url: str) -> httpx.URL:
    """The URL if it is an absolute http:// or https:// URL with a host and no credentials."""
    if len(url) > URL_MAX:
        raise Refused(f"longer than {URL_MAX} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise Refused("not a URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise Refused("not an absolute http:// or https:// URL")
    if parsed.userinfo:
        raise Refused("credentials in the URL")
    return parsed


async def resolve(url: str, *, allow_private: bool) -> Target:
    """The URL's host resolved; Refused if it does not resolve or any of its addresses is refused."""
    parsed = parse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused("the host does not resolve") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in found]
    if not addresses:
        raise Refused("the host does not resolve")
    if not allow_private and any(refused_address(a) for a in addresses):
        raise Refused("the host resolves to a loopback, private, link-local or metadata address")
    return Target(parsed, str(addresses[0]))
