"""Which hosts ``fetch_and_hash`` may connect to: public addresses only, unless the caller says otherwise.

The URLs it fetches come from prompts, so without a guard a prompt could make an agent pod request its
cloud metadata service (169.254.169.254), the Valkey next door or an admin port on localhost — and the
cache key would even confirm what was served there. Every address is checked where it is known for
sure: IP literals before the request, host names after DNS resolution (so a name that resolves to a
private address, or re-resolves to one later, is refused too), and again for every redirect hop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from ._errors import AgentCacheUsageError

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IpAddress], bool]


def public_address(address: IpAddress) -> bool:
    """The default policy: globally routable unicast only (no loopback, private, link-local, CGNAT,
    multicast, reserved or unspecified addresses; IPv4-mapped IPv6 is judged as the IPv4 it maps)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def refused(host: str, address: IpAddress) -> AgentCacheUsageError:
    shown = host if host == str(address) else f"{host} ({address})"
    return AgentCacheUsageError(
        f"fetch_and_hash refused to connect to {shown}: not a public address "
        "(pass allow_address= to fetch from private networks)"
    )


def check_literal(host: str, policy: AddressPolicy) -> None:
    """Refuse an IP-literal host the policy does not allow; host names are checked after resolution."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return
    if not policy(address):
        raise refused(host, address)


def guarded_resolver(policy: AddressPolicy) -> Any:
    """An aiohttp resolver that drops the addresses ``policy`` refuses, and fails if none is left."""
    from aiohttp.abc import AbstractResolver, ResolveResult
    from aiohttp.resolver import DefaultResolver

    class GuardedResolver(AbstractResolver):
        def __init__(self) -> None:
            self._inner = DefaultResolver()

        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            results = await self._inner.resolve(host, port, family)
            allowed = [result for result in results if policy(ipaddress.ip_address(result["host"]))]
            if not allowed and results:
                raise refused(host, ipaddress.ip_address(results[0]["host"]))
            return allowed

        async def close(self) -> None:
            await self._inner.close()

    return GuardedResolver()
