"""``--allow CIDR``: the address ranges a tracker or a peer deals with (the LAN-only trust of a folder-sharing tool).

Pure: :func:`parse_ranges` reads what the user typed, :meth:`AllowList.admits`
decides for an address; the servers apply it when they accept a connection,
and a downloader before it connects to a holder. An empty list admits all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

from common.errors import ValidationError

__all__ = ["Network", "AllowList", "parse_ranges"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ranges(texts: Iterable[str]) -> tuple[Network, ...]:
    """Each ``text`` (``10.0.0.0/8``, ``fd00::/8``, or one address) as a network; :class:`ValidationError` naming a bad one."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise ValidationError(f"--allow {text!r}: expected an address range such as 192.168.1.0/24 or fd00::/8") from None
    return tuple(networks)


def _networks(value: Iterable[Network]) -> tuple[Network, ...]:
    return tuple(value)


@attrs.frozen
class AllowList:
    """Address ranges; an empty list admits every address."""

    networks: tuple[Network, ...] = attrs.field(default=(), converter=_networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def admits(self, host: str) -> bool:
        """Whether ``host`` (an IP address in text) is in a range; a host name is not, unless the list is empty."""
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack listener sees IPv4 clients so
        return any(address in network for network in self.networks)

    def __str__(self) -> str:
        return ", ".join(map(str, self.networks)) or "any address"
