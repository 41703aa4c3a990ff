"""``chunkswarm seed | get | ls | stats``: click commands that build a :class:`PeerConfig` and run trio.

Exported as ``peer_commands`` for the ``chunkswarm`` group (``chunkswarm.cli``).
"""

from __future__ import annotations

import gc
import logging
import pathlib
import signal
from collections.abc import Callable
from typing import Any

import click
import trio
from rich.console import Console

from chunkswarm.console import LOG_LEVELS, console, setup_logging
from chunkswarm.ui import file_table, progress_display, stats_table
from common.address import format_address, parse_address
from common.errors import ChunkswarmError, ValidationError
from common.manifest import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from peer.config import PeerConfig, default_state_dir
from peer.node import Peer, open_catalogue, open_peer
from peer.seeder import Seeder

__all__ = ["peer_commands", "seed", "get", "ls", "stats"]

logger = logging.getLogger("peer")

DEFAULT_TRACKER = "127.0.0.1:7070"


def _parse_tracker(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, int]:
    try:
        return parse_address(value)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


def _peer_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--tracker", default=DEFAULT_TRACKER, envvar="CHUNKSWARM_TRACKER", show_default=True, show_envvar=True,
                     callback=_parse_tracker, help="Tracker address HOST:PORT."),
        click.option("--state-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=None,
                     help=f"Where this peer keeps its state [default: {default_state_dir()}]."),
        click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve chunks on."),
        click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port to serve chunks on (0: any free port)."),
        click.option("--label", default="", help="A name for this peer in logs and in other peers' logs."),
        click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO", show_default=True),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _config(tracker: tuple[str, int], state_dir: pathlib.Path | None, host: str, port: int, label: str, **extra: Any) -> PeerConfig:
    kwargs: dict[str, Any] = {"tracker": tracker, "listen_host": host, "listen_port": port, "label": label, **extra}
    if state_dir is not None:
        kwargs["state_dir"] = state_dir
    return PeerConfig(**kwargs)


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


async def _serve_until_signalled(peer: Peer) -> None:
    """Serve until SIGINT or SIGTERM, then log what was uploaded."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            logger.info("%s: %s received, leaving", peer.name, signal.Signals(signum).name)
            break
    uploaded = peer.transfers.uploaded
    detail = ", ".join(f"{name}: {count.chunks}" for name, count in uploaded.items()) or "nobody"
    logger.info("%s uploaded %d bytes in %d chunks (%s)", peer.name, peer.transfers.bytes_uploaded,
                sum(c.chunks for c in uploaded.values()), detail)


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
def seed(paths: tuple[pathlib.Path, ...], chunk_size: int | None, max_upload_connections: int, watch: bool, log_level: str,
         **options: Any) -> None:  # fmt: skip
    """Publish files (directories: every file inside) and serve them until interrupted.

    The tracker need not be up yet: it is tried until it answers.
    """
    setup_logging(log_level)
    config = _config(chunk_size=chunk_size, max_upload_connections=max_upload_connections, **options)
    _run(_seed, config, paths, watch)


async def _seed(config: PeerConfig, paths: tuple[pathlib.Path, ...], watch: bool) -> None:
    async with open_peer(config) as peer:
        logger.info("serving on %s", format_address(*peer.listen_address))
        # A service may start before its tracker: it is tried until it answers, and
        # everything seeded is published then (and again after every reconnection).
        await peer.connect(retry=True)
        if peer.connected:
            logger.info("connected to the tracker at %s", format_address(*config.tracker))
        seeder = Seeder(peer, paths)
        with progress_display(console) as progress:
            manifests = await seeder.publish_all(progress=progress)
        for manifest in manifests:
            logger.info("seeding %s (%s, %d bytes, %d chunks)", manifest.name, manifest.hex_id[:16], manifest.size, manifest.chunk_count)
        async with trio.open_nursery() as nursery:
            if watch:
                await nursery.start(seeder.follow)
                logger.info("watching %s: new and changed files are published as they appear", ", ".join(map(str, paths)))
            await _serve_until_signalled(peer)
            nursery.cancel_scope.cancel()


# -- get ---------------------------------------------------------------------------
@click.command()
@click.argument("file")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=pathlib.Path("."),
              show_default=True, help="Directory to put the file in.")
@click.option("--seed", "keep_seeding", is_flag=True, help="Keep serving the file once it is downloaded.")
@click.option("--force", is_flag=True, help="Overwrite an existing different file of that name.")
@click.option("--pipeline-depth", type=click.IntRange(1, 64), default=PeerConfig().pipeline_depth, show_default=True,
              help="Requests in flight per peer connection.")
@click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=PeerConfig().stall_timeout, show_default=True,
              help="Give up when missing chunks have had no reachable holder for this many seconds.")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=PeerConfig().request_timeout, show_default=True,
              help="Drop a peer that leaves requests unanswered for this many seconds.")
@click.option("--direct-io", is_flag=True,
              help="Write and read back chunks past the page cache (O_DIRECT); every write then waits for the disk.")
@_peer_options
def get(file: str, output_dir: pathlib.Path, keep_seeding: bool, force: bool, pipeline_depth: int, stall_timeout: float,
        request_timeout: float, direct_io: bool, log_level: str, **options: Any) -> None:
    """Download FILE (a file id, or a unique id prefix, or an exact name) from the swarm."""
    setup_logging(log_level)
    config = _config(pipeline_depth=pipeline_depth, stall_timeout=stall_timeout, request_timeout=request_timeout,
                     direct_io=direct_io, **options)
    _run(_get, config, file, output_dir, keep_seeding, force)


async def _get(config: PeerConfig, query: str, output_dir: pathlib.Path, keep_seeding: bool, force: bool) -> None:
    async with open_peer(config) as peer:
        await peer.connect()
        with progress_display(console) as progress:
            result = await peer.download(query, output_dir, force=force, progress=progress)
        mib = result.bytes_received / 2**20
        rate = mib / result.seconds if result.seconds > 0 else 0.0
        sources = ", ".join(f"{name}: {count.chunks}" for name, count in result.received.items()) or "none needed"
        logger.info("%s -> %s (%.1f MiB in %.2f s, %.1f MiB/s; chunks from %s)", result.manifest.name, result.path, mib, result.seconds, rate, sources)
        if keep_seeding:
            logger.info("serving on %s", format_address(*peer.listen_address))
            await _serve_until_signalled(peer)


# -- ls ----------------------------------------------------------------------------
@click.command()
@click.argument("pattern", default="")
@_peer_options
def ls(pattern: str, log_level: str, **options: Any) -> None:
    """List the tracker's files whose name contains PATTERN."""
    setup_logging(log_level)
    config = _config(**options)
    entries = _run(_ls, config, pattern)
    table = file_table(entries, f"files on {format_address(*config.tracker)}")
    Console().print(table)


async def _ls(config: PeerConfig, pattern: str) -> list[Any]:
    # Query only: ls serves nothing, so it must not register as a peer.
    async with open_catalogue(config) as catalogue:
        return await catalogue.list_files(pattern)


# -- stats -------------------------------------------------------------------------
@click.command()
@_peer_options
def stats(log_level: str, **options: Any) -> None:
    """Show the tracker's counters: peers online, files, replicas, connections, requests served."""
    setup_logging(log_level)
    config = _config(**options)
    counters = _run(_stats, config)
    Console().print(stats_table(counters, f"tracker {format_address(*config.tracker)}"))


async def _stats(config: PeerConfig) -> dict[str, int | float]:
    async with open_catalogue(config) as catalogue:  # asks only, as ls does
        return await catalogue.stats()


peer_commands = [seed, get, ls, stats]
