"""What the tracker answers each BitTorrent request, pure and synchronous: the part both shells share.

:meth:`BtFront.http_answer` takes a framed HTTP request and the address it
came from and returns the whole HTTP response; :meth:`BtFront.udp_answer`
takes a datagram and returns the datagram to send back, or None to drop it.
The address handed out to other peers is the observed one unless the
settings honour a claimed one.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import attrs

from common.address import format_address
from tracker.bittorrent import udp_packets as udp
from tracker.bittorrent.connection_ids import ConnectionIds
from tracker.bittorrent.errors import BtFailure
from tracker.bittorrent.http_framing import HttpRequest, response
from tracker.bittorrent.replies import announce_reply, failure_reply, scrape_reply
from tracker.bittorrent.requests import parse_announce, parse_scrape
from tracker.bittorrent.settings import BitTorrentConfig
from tracker.bittorrent.swarms import EVENT_STOPPED, Swarms

__all__ = ["BtFront"]

log = logging.getLogger(__name__)

_NOT_FOUND = response(404, failure_reply("not a tracker path: use /announce or /scrape"))


@attrs.define(eq=False)
class BtFront:
    """The swarms and settings one tracker's BitTorrent shells share, and the answer to each request."""

    config: BitTorrentConfig
    swarms: Swarms
    connection_ids: ConnectionIds

    @classmethod
    def create(cls, config: BitTorrentConfig, clock: Callable[[], float]) -> BtFront:
        swarms = Swarms(
            config.peer_timeout, clock, max_peers=config.max_peers,
            max_peers_per_ip=config.max_peers_per_ip, max_peers_per_ip_per_swarm=config.max_peers_per_ip_per_torrent,
        )  # fmt: skip
        return cls(config, swarms, ConnectionIds(clock, config.connection_id_lifetime))

    def numwant(self, asked: int | None) -> int:
        if asked is None or asked < 0:
            return self.config.default_numwant
        return min(asked, self.config.max_numwant)

    # -- HTTP (BEP 3, 7, 23, 48) ----------------------------------------------------
    def http_answer(self, request: HttpRequest, host: str) -> bytes:
        """The HTTP response to ``request`` from ``host``: 200 with a bencoded body, a failure reason included."""
        path = request.path
        close = not request.keep_alive
        try:
            if path == b"/announce":
                body = self._http_announce(request.query, host)
            elif path == b"/scrape":
                body = scrape_reply((info_hash, self.swarms.scrape(info_hash)) for info_hash in parse_scrape(request.query))
            else:
                return _NOT_FOUND if not close else response(404, failure_reply("not a tracker path"), close=True)
        except BtFailure as exc:
            log.debug("refused a BitTorrent request from %s: %s", host, exc)
            body = failure_reply(str(exc), self.config.min_interval)
        return response(200, body, close=close)

    def _http_announce(self, query: bytes, host: str) -> bytes:
        config = self.config
        announce = parse_announce(query, allow_claimed_ip=config.allow_claimed_ip)
        peers = self.swarms.announce(
            announce.info_hash, announce.peer_id, announce.ip or host, announce.port, announce.left, announce.event,
            self.numwant(announce.numwant) if announce.event != EVENT_STOPPED else 0, listed=not announce.compact,
        )  # fmt: skip
        return announce_reply(peers, config.interval, config.min_interval, compact=announce.compact, no_peer_id=announce.no_peer_id)

    # -- UDP (BEP 15) -----------------------------------------------------------------
    def udp_answer(self, data: bytes, host: str, port: int) -> bytes | None:
        """The datagram answering ``data`` from ``(host, port)``, or None to drop it (garbage, or an id never issued)."""
        try:
            request = udp.parse_packet(data)
        except udp.BadPacket as exc:
            log.debug("dropped a datagram from %s: %s", format_address(host, port), exc)
            return None
        if isinstance(request, udp.ConnectRequest):
            return udp.connect_reply(request.transaction_id, self.connection_ids.issue(host, port))
        if not self.connection_ids.valid(request.connection_id, host, port):
            # Expired, or never issued to this address: maybe spoofed, so no answer at all.
            log.debug("dropped a datagram from %s: connection id not issued to it, or expired", format_address(host, port))
            return None
        try:
            if isinstance(request, udp.ScrapeRequest):
                return udp.scrape_reply(request.transaction_id, [self.swarms.scrape(info_hash) for info_hash in request.info_hashes])
            return self._udp_announce(request, host)
        except BtFailure as exc:
            log.debug("refused a BitTorrent request from %s: %s", format_address(host, port), exc)
            return udp.error_reply(request.transaction_id, str(exc))

    def _udp_announce(self, request: udp.AnnounceRequest, host: str) -> bytes:
        if request.event > EVENT_STOPPED:
            raise BtFailure(f"unknown event {request.event}")
        if request.ip and self.config.allow_claimed_ip:
            host = str(ipaddress.IPv4Address(request.ip))
        numwant = self.numwant(request.numwant) if request.event != EVENT_STOPPED else 0
        peers = self.swarms.announce(request.info_hash, request.peer_id, host, request.port, request.left, request.event, numwant)
        # BEP 15: a client on IPv6 gets 18-byte entries, one on IPv4 6-byte ones.
        compact = peers.peers6 if ":" in host else peers.peers4
        return udp.announce_reply(request.transaction_id, self.config.interval, peers.leechers, peers.seeders, compact)
