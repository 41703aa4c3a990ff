"""The tracker advertised on the LAN by mDNS/DNS-SD (the ``zeroconf`` library): service ``_chunkswarm._tcp.local.``.

The TXT record says what a peer needs to choose: ``node`` (the tracker's node
id, as people read it), ``private`` ("1" for a private swarm: TLS and proof of
membership, PROTOCOL.md §8.8) and ``protocol`` (the wire protocol version).
Peers find it with ``peer.discovery``.

zeroconf runs its own thread and asyncio loop; registering and unregistering
block (they announce and wait), so they run in a worker thread here, and the
trio task only waits to be cancelled. A tracker that listens on a loopback
address only is not advertised: nobody on the LAN could reach it.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Final

import ifaddr
import trio
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from common.framing import PROTOCOL_VERSION
from common.identity import NodeKey, short_id

__all__ = ["SERVICE_TYPE", "advertised_addresses", "advertise"]

log = logging.getLogger(__name__)

SERVICE_TYPE: Final = "_chunkswarm._tcp.local."
#: Longest the withdrawal of the advertisement may hold up a shutdown.
_CLOSE_TIMEOUT: Final = 3.0


def advertised_addresses(host: str) -> list[str]:
    """The IPv4 addresses a tracker listening on ``host`` is reached at from the LAN (none for loopback)."""
    every = host in ("", "*", "0.0.0.0", "::")
    candidates = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4] if every else [host]
    found = []
    for candidate in candidates:
        try:
            address = ipaddress.ip_address(str(candidate))
        except ValueError:
            continue
        if address.version == 4 and not address.is_loopback and not address.is_unspecified:
            found.append(str(address))
    return found


def _info(key: NodeKey, addresses: list[str], port: int, private: bool) -> ServiceInfo:
    name = f"chunkswarm tracker {short_id(key.node_id)}"
    return ServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        port=port,
        addresses=[socket.inet_aton(address) for address in addresses],
        properties={"node": key.display, "private": "1" if private else "0", "protocol": str(PROTOCOL_VERSION)},
        server=f"chunkswarm-{short_id(key.node_id).lower()}.local.",
    )


def _register(info: ServiceInfo, addresses: list[str]) -> Zeroconf:
    zeroconf = Zeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
    try:
        zeroconf.register_service(info, allow_name_change=True)
    except BaseException:
        zeroconf.close()
        raise
    return zeroconf


def _withdraw(zeroconf: Zeroconf, info: ServiceInfo) -> None:
    try:
        zeroconf.unregister_service(info)
    finally:
        zeroconf.close()


async def advertise(key: NodeKey, host: str, port: int, *, private: bool) -> None:
    """Advertise the tracker at ``host``:``port`` until cancelled; returns at once (saying why) when it has no LAN address."""
    addresses = advertised_addresses(host)
    if not addresses:
        log.info("listening on %s only: not advertised by mDNS (listen on '*' or a LAN address to be found on the LAN)", host)
        return
    info = _info(key, addresses, port, private)
    try:
        zeroconf = await trio.to_thread.run_sync(_register, info, addresses)
    except (OSError, RuntimeError) as exc:  # no multicast route, an interface that went away ...
        log.warning("cannot advertise the tracker by mDNS: %s", exc)
        return
    log.info("advertised by mDNS as %r (%s) at %s port %d", info.name.removesuffix("." + SERVICE_TYPE), SERVICE_TYPE,
             ", ".join(addresses), port)  # fmt: skip
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT):
            await trio.to_thread.run_sync(_withdraw, zeroconf, info, abandon_on_cancel=True)
