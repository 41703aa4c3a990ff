"""``chunkswarm seed | ls | stats``: click commands that build a :class:`PeerConfig` and run trio; the options they share with ``get``.

Exported as ``peer_commands`` for the ``chunkswarm`` group (``chunkswarm.cli``); ``get`` is in ``chunkswarm.get_command``.
"""

from __future__ import annotations

import gc
import logging
import pathlib
import re
import signal
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import click
import trio
from rich.console import Console

from chunkswarm.console import LOG_LEVELS, console, create_state_dir, log_file_option, setup_logging
from chunkswarm.gateway_option import gateway_config, http_options
from chunkswarm.node_key import claim_node_key
from chunkswarm.swarm_command import ALLOW_OPTION, SWARM_OPTION
from chunkswarm.ui import file_table, progress_display, stats_table, torrent_table
from common.address import TRACKER_PORT, format_address, parse_address
from common.errors import ChunkswarmError, ValidationError
from common.manifest import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from common.messages import FileList, TorrentList
from common.swarm import SwarmFile
from common.torrent_messages import MAX_TORRENTS_LISTED
from common.wording import format_size, plural
from peer.catalogue import LIST_LIMIT, open_catalogue
from peer.config import PeerConfig, default_state_dir
from peer.gateway import GatewayConfig, serve_gateway
from peer.node import Peer, open_peer

__all__ = ["peer_commands", "seed", "ls", "stats"]

logger = logging.getLogger("peer")

DEFAULT_TRACKER = f"127.0.0.1:{TRACKER_PORT}"
#: Files ``ls`` shows unless told otherwise: a catalogue of 200,000 is not read on a terminal.
LS_LIMIT = 1000


#: Several trackers of one swarm, in the order a peer tries them (``--tracker A --tracker B``).
Trackers = tuple[tuple[str, int], ...]


def parse_trackers(ctx: click.Context, param: click.Parameter, value: Sequence[str] | str) -> Trackers:
    """Each ``--tracker``, each split at commas and spaces (as CHUNKSWARM_TRACKER may list them): the addresses in order."""
    if not value:  # neither --tracker nor CHUNKSWARM_TRACKER: look on the LAN (mDNS)
        from chunkswarm.discover import find_tracker

        return (find_tracker(private=ctx.params.get("swarm") is not None),)
    words = [word for text in ([value] if isinstance(value, str) else value) for word in re.split(r"[,\s]+", text) if word]
    if not words:
        raise click.BadParameter("give a tracker address HOST[:PORT]")
    try:
        return tuple(dict.fromkeys(parse_address(word, default_port=TRACKER_PORT) for word in words))
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


def tracker_settings(trackers: Trackers) -> dict[str, Any]:
    """The PeerConfig fields of ``trackers``: the first is used, the others when it fails."""
    return {"tracker": trackers[0], "fallback_trackers": trackers[1:]}


def _options(func: Callable[..., Any], options: list[Callable[[Any], Any]]) -> Callable[..., Any]:
    for option in reversed(options):
        func = option(func)
    return func


_TRACKER_OPTION = click.option("--tracker", multiple=True, envvar="CHUNKSWARM_TRACKER", show_envvar=True, callback=parse_trackers,
                               help=f"Tracker address HOST[:PORT] (port {TRACKER_PORT} if left out); given again (or a list, comma- or "
                                    "space-separated), trackers sharing the swarm, tried in turn when the one in use fails  [default: the "
                                    f"tracker found on the LAN by mDNS, else {DEFAULT_TRACKER}]")  # fmt: skip
_LOG_LEVEL_OPTION = click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO", show_default=True)


def _query_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a command that only asks the tracker (ls, stats): it serves nothing and keeps no state."""
    return _options(func, [_TRACKER_OPTION, SWARM_OPTION, _LOG_LEVEL_OPTION])


def _peer_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a command that runs a peer (seed, get): it serves chunks and keeps state."""
    return _options(func, [
        _TRACKER_OPTION,
        click.option("--state-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=None,
                     help=f"Where this peer keeps its state (manifest cache)  [default: {default_state_dir()}]"),
        click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve chunks on."),
        click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port to serve chunks on (0: any free port)."),
        click.option("--label", default="", help="A name for this peer in logs and in other peers' logs."),
        SWARM_OPTION,
        ALLOW_OPTION,
        _LOG_LEVEL_OPTION,
    ])  # fmt: skip


def _config(tracker: Trackers, state_dir: pathlib.Path | None, host: str, port: int, label: str, **extra: Any) -> PeerConfig:
    kwargs: dict[str, Any] = {**tracker_settings(tracker), "listen_host": host, "listen_port": port, "label": label, **extra}
    if state_dir is not None:
        kwargs["state_dir"] = state_dir
    config = PeerConfig(**kwargs)
    _announce_state_dir(config.state_dir)
    return config


def _announce_state_dir(state_dir: pathlib.Path) -> None:
    if create_state_dir(state_dir):
        logger.info("created %s: chunkswarm keeps this peer's state there (--state-dir picks another folder)", state_dir)


def _run(async_fn: Callable[..., Any], *args: Any) -> Any:
    """trio.run, with chunkswarm's errors as click errors and Ctrl-C as a quiet exit."""
    # Everything imported so far lives as long as the process: keep it out of the
    # cyclic garbage collector's scans (they showed up at a few % of CPU while swarming).
    gc.freeze()
    try:
        return trio.run(async_fn, *args)
    except ChunkswarmError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None


async def _serve_until_signalled(peer: Peer, ready: str = "") -> None:
    """Serve until SIGINT or SIGTERM, then log what was uploaded; ``ready`` is logged once a signal is sure to be caught."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        if ready:
            logger.info("%s", ready)
        async for signum in signals:
            logger.info("%s: %s received, leaving", peer.name, signal.Signals(signum).name)
            break
    uploaded = peer.transfers.uploaded
    detail = ", ".join(f"{name}: {count.chunks}" for name, count in uploaded.items())
    logger.info("%s uploaded %s (%s, %d bytes) to %s%s", peer.name, plural(sum(c.chunks for c in uploaded.values()), "chunk"),
                format_size(peer.transfers.bytes_uploaded), peer.transfers.bytes_uploaded, plural(len(uploaded), "peer"),
                f" ({detail})" if detail else "")


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
    from peer.seeder import Seeder  # here: it loads watchfiles, which get (this module's other user) never needs

    async with open_peer(config) as peer, trio.open_nursery() as services:
        logger.info("serving on %s", format_address(*peer.listen_address))
        if gateway is not None:  # before REGISTER, which tells the tracker its port
            await services.start(serve_gateway, peer, gateway)
        # A service may start before its tracker: it is tried until it answers, and
        # everything seeded is published then (and again after every reconnection).
        await peer.connect(retry=True)
        if peer.connected:
            logger.info("connected to the tracker at %s", format_address(*config.tracker))
        seeder = Seeder(peer, paths)
        with progress_display(console) as progress:
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
    setup_logging(log_level)
    config = PeerConfig(**tracker_settings(tracker), swarm=swarm)
    counters = _run(_stats, config)
    Console().print(stats_table(counters, f"tracker {format_address(*config.tracker)}"))


async def _stats(config: PeerConfig) -> dict[str, int | float]:
    async with open_catalogue(config) as catalogue:  # asks only, as ls does
        return await catalogue.stats()


peer_commands = [seed, ls, stats]
