"""``chunkswarm seed | ls | stats``: click commands that build a :class:`PeerConfig` and run trio; the options they share with ``get``.

Exported as ``peer_commands`` for the ``chunkswarm`` group (``chunkswarm.cli``); ``get`` is in ``chunkswarm.get_command``.
"""

from __future__ import annotations

import logging
import pathlib
from typing import TYPE_CHECKING, Any

import attrs
import click
import trio

from chunkswarm.console import log_file_option, setup_logging, terminal_console
from chunkswarm.gateway_option import gateway_config, http_options
from chunkswarm.log_progress import progress_display
from chunkswarm.node_key import claim_node_key
from chunkswarm.peer_options import (
    Trackers,
    _config,
    _peer_options,
    _query_options,
    _run,
    _serve_until_signalled,
    tracker_settings,
)
from common.address import format_address
from common.manifest import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from common.messages import FileList, TorrentList
from common.swarm import SwarmFile
from common.torrent_messages import MAX_TORRENTS_LISTED
from common.wording import format_size, plural
from peer.catalogue import LIST_LIMIT, open_catalogue
from peer.config import PeerConfig
from peer.node import open_peer

if TYPE_CHECKING:
    from peer.gateway import GatewayConfig

__all__ = ["peer_commands", "seed", "ls", "stats"]

logger = logging.getLogger("peer")

#: Files ``ls`` shows unless told otherwise: a catalogue of 200,000 is not read on a terminal.
LS_LIMIT = 1000


# -- seed --------------------------------------------------------------------------
@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=pathlib.Path))
@click.option("--chunk-size", type=click.IntRange(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE), default=None,
              help="Chunk size in bytes for newly published files [default: from each file's size, as every publisher does, "
                   "so the same file has the same id: 1 KiB to 16 MiB, about 1,000 chunks a file]. Another size publishes another file id.")
@click.option("--max-upload-connections", type=click.IntRange(min=1), default=PeerConfig().max_upload_connections, show_default=True,
              help="Peers served at once; more are told BUSY.")
@click.option("--watch/--no-watch", default=True, show_default=True,
              help="Follow the folders: publish new and changed files, stop serving removed ones.")
@_peer_options
@http_options
@log_file_option
def seed(paths: tuple[pathlib.Path, ...], chunk_size: int | None, max_upload_connections: int, watch: bool, log_level: str,
         log_file: pathlib.Path | None, http: tuple[str, int] | None, http_dir: pathlib.Path | None, http_max_upload: int,
         **options: Any) -> None:  # fmt: skip
    """Publish files (directories: every file inside) and serve them until interrupted.

    The tracker need not be up yet: it is tried until it answers.
    """
    setup_logging(log_level, log_file)
    config = _config(chunk_size=chunk_size, max_upload_connections=max_upload_connections, **options)
    # The node's own key (its identity: what it publishes is its to unpublish); get, which publishes
    # nothing, proves a key of its own for the run, so it can run beside this node's seeder.
    config = attrs.evolve(config, node_key=claim_node_key(config.state_dir))
    _run(_seed, config, paths, watch, gateway_config(http, http_dir, config.state_dir, http_max_upload))


async def _seed(config: PeerConfig, paths: tuple[pathlib.Path, ...], watch: bool, gateway: GatewayConfig | None) -> None:
    from peer.seeder import Seeder  # here: get (this module's other user) never publishes

    async with open_peer(config) as peer, trio.open_nursery() as services:
        logger.info("serving on %s", format_address(*peer.listen_address))
        if gateway is not None:  # before REGISTER, which tells the tracker its port
            from peer.gateway import serve_gateway  # here: hypercorn and starlette, only for --http

            await services.start(serve_gateway, peer, gateway)
        # A service may start before its tracker: it is tried until it answers, and
        # everything seeded is published then (and again after every reconnection).
        await peer.connect(retry=True)
        if peer.connected:
            logger.info("connected to the tracker at %s", format_address(*config.tracker))
        seeder = Seeder(peer, paths)
        with progress_display(terminal_console()) as progress:
            manifests = await seeder.publish_all(progress=progress)
        for manifest in manifests:
            logger.info("seeding %s (%s, %s, %s)", manifest.name, manifest.hex_id[:16], format_size(manifest.size),
                        plural(manifest.chunk_count, "chunk"))  # fmt: skip
        async with trio.open_nursery() as nursery:
            if watch:
                await nursery.start(seeder.follow)
                logger.info("watching %s: new and changed files are published as they appear", ", ".join(map(str, paths)))
            await _serve_until_signalled(peer)
            nursery.cancel_scope.cancel()
        services.cancel_scope.cancel()


# -- ls ----------------------------------------------------------------------------
@click.command()
@click.argument("pattern", default="")
@click.option("--limit", type=click.IntRange(1, LIST_LIMIT), default=LS_LIMIT, show_default=True, help="Most files shown, newest first.")
@_query_options
def ls(pattern: str, limit: int, tracker: Trackers, swarm: SwarmFile | None, log_level: str) -> None:
    """List the tracker's files whose name contains PATTERN, newest first."""
    from rich.console import Console

    from chunkswarm.ui import file_table, torrent_table

    setup_logging(log_level)
    config = PeerConfig(**tracker_settings(tracker), swarm=swarm)
    listing, counted, torrents = _run(_ls, config, pattern, limit)
    out = Console()
    out.print(file_table(list(listing.entries), f"files on {format_address(*config.tracker)}"))
    if torrents is not None and torrents.entries:
        out.print(torrent_table(torrents.entries, f"BitTorrent swarms on {format_address(*config.tracker)}"))
        if torrents.more:
            out.print(f"{plural(len(torrents.entries), 'swarm')} shown (those with the most peers), {torrents.more:,} more")
    shown = len(listing.entries)
    if listing.more:
        out.print(f"{plural(shown, 'file')} shown, {listing.more:,} more on the tracker: give a PATTERN to narrow the listing, or a larger --limit")
    elif shown == limit and not counted:
        out.print(f"the first {plural(shown, 'file')} shown (--limit); the tracker does not say how many more it has")


async def _ls(config: PeerConfig, pattern: str, limit: int) -> tuple[FileList, bool, TorrentList | None]:
    # Query only: ls serves nothing, so it must not register as a peer.
    async with open_catalogue(config) as catalogue:
        listing = await catalogue.listing(pattern, limit)
        # BitTorrent swarms have no names to match: listed with the whole catalogue only.
        torrents = None if pattern else await catalogue.torrents(min(limit, MAX_TORRENTS_LISTED))
        return listing, catalogue.counts_the_rest, torrents


# -- stats -------------------------------------------------------------------------
@click.command()
@_query_options
def stats(tracker: Trackers, swarm: SwarmFile | None, log_level: str) -> None:
    """Show the tracker's counters: peers online, files, replicas, connections, requests served."""
    from rich.console import Console

    from chunkswarm.ui import stats_table

    setup_logging(log_level)
    config = PeerConfig(**tracker_settings(tracker), swarm=swarm)
    counters = _run(_stats, config)
    Console().print(stats_table(counters, f"tracker {format_address(*config.tracker)}"))


async def _stats(config: PeerConfig) -> dict[str, int | float]:
    async with open_catalogue(config) as catalogue:  # asks only, as ls does
        return await catalogue.stats()


peer_commands = [seed, ls, stats]
