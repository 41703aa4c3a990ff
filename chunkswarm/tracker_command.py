"""``chunkswarm tracker``: click options -> :class:`TrackerConfig` -> ``trio.run(serve_tracker)``.

Runs until SIGINT or SIGTERM, then closes the connections and the database
and exits 0. ``tracker listening on HOST:PORT`` is logged once bound (with
``--port 0``, the port picked).
"""

from __future__ import annotations

import gc
import logging
import os
import pathlib
import signal
from functools import partial

import click
import platformdirs
import trio

from chunkswarm.bt_options import bittorrent_options
from chunkswarm.console import LOG_LEVELS, log_file_option, setup_logging
from chunkswarm.node_key import KEY_FILE, load_or_create_key
from chunkswarm.swarm_command import swarm_options
from common.address import TRACKER_PORT, parse_address
from common.allow import AllowList
from common.errors import StorageError, ValidationError
from common.swarm import SwarmFile
from tracker.bittorrent.settings import BitTorrentConfig
from tracker.config import DEFAULT_CONNECTIONS_PER_IP, DEFAULT_IO, DEFAULT_PEERS_PER_IP, IO_PATHS, IoPath, TrackerConfig
from tracker.service import serve_tracker

__all__ = ["tracker_command", "default_db_path"]

log = logging.getLogger(__name__)


def default_db_path() -> str:
    return os.path.join(platformdirs.user_data_dir("chunkswarm"), "tracker.db")


def _raise_fd_limit(wanted: int) -> None:
    """Each connection is a file descriptor; the usual soft limit of 1024 is below the default cap."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("cannot raise the open-file limit to %d; connections beyond %d will be refused", target, soft)


#: Seconds between moves of long-lived objects out of the cyclic collector's reach.
GC_FREEZE_INTERVAL = 10.0
#: Net allocations of tracked objects between young collections (Python's default: 700).
GC_YOUNG_THRESHOLD = 20_000


async def _freeze_long_lived_objects() -> None:
    """Keep garbage collections short and rare: process-wide settings, hence here and not in the server.

    A full collection traverses every tracked object; with 1000 peers x 100
    files the registry's 200,000 replica objects make that ~50 ms during which
    no connection is served. Frozen objects are still freed by reference
    counting when a peer leaves (the registry unlinks everything explicitly)
    and when a connection closes (a connection holds no reference cycle: a
    test checks it), so the cyclic collector never needs to see them. Cyclic
    garbage that is frozen is never freed: keep long-lived objects acyclic.

    Young collections are made rarer: every connection waiting for its next
    request holds about 15 young objects (its chain of coroutines down to the
    epoll wait), so with 1000 connections a young collection traverses ~15,000
    live objects (3-4 ms) whatever the threshold, and at 700 one ran about 20
    times a second (bench/tracker.py: ~8% of the tracker's CPU, 0.7 s of GC per
    20 s against 0.07 s at 20,000). Requests make little cyclic garbage.
    """
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), *older)
    try:
        while True:
            await trio.sleep(GC_FREEZE_INTERVAL)
            gc.collect(1)  # young garbage first, so little of it is frozen
            gc.freeze()
    finally:
        gc.set_threshold(young, *older)


async def _run_until_signal(config: TrackerConfig) -> None:
    """Serve until SIGINT/SIGTERM; errors before the tracker is listening are raised as they are."""
    startup_error: OSError | StorageError | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                running = await nursery.start(serve_tracker, config)
            except (OSError, StorageError) as exc:
                # Raised from here it would come out of the nursery wrapped in an ExceptionGroup.
                startup_error = exc
            else:
                nursery.start_soon(_freeze_long_lived_objects)
                if config.mdns:  # found on the LAN by peers started without --tracker (peer/discovery.py)
                    from tracker.mdns import advertise  # zeroconf is loaded only by a tracker that advertises

                    nursery.start_soon(partial(advertise, config.node_key, config.host, running.port, private=config.swarm is not None))
                async for signum in signals:
                    log.info("%s received, shutting down", signal.Signals(signum).name)
                    break
            nursery.cancel_scope.cancel()
    if startup_error is not None:
        raise startup_error


def _http_address(host: str, http: str | None, no_http: bool) -> tuple[str | None, int | None]:
    """``--http`` / ``--no-http`` -> where the web UI listens: (None, None) for none; a port of None: the protocol port + 1."""
    if no_http:
        if http is not None:
            raise click.UsageError("--http and --no-http contradict each other")
        return None, None
    if http is None:
        return host, None
    try:
        return parse_address(http)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="--http") from None


@click.command("tracker", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on, IPv4 or IPv6 ('*': every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=TRACKER_PORT, show_default=True, help="TCP port; 0 picks a free one.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
              help="SQLite file for the catalogue  [default: tracker.db in the user data directory]")  # fmt: skip
@click.option("--heartbeat-interval", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Seconds between heartbeats, told to each peer.")  # fmt: skip
@click.option("--peer-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds of silence before a peer and its replicas are dropped  [default: 3 heartbeat intervals]")  # fmt: skip
@click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds a connection may go without a request  [default: 4 heartbeat intervals]")  # fmt: skip
@click.option("--max-connections", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Connections beyond this are refused with an error frame.")  # fmt: skip
@click.option("--max-connections-per-ip", type=click.IntRange(min=1), default=DEFAULT_CONNECTIONS_PER_IP, show_default=True,
              help="Connections one address (an IPv6 /64) may hold open; beyond it refused with an error frame.")  # fmt: skip
@click.option("--max-peers-per-ip", type=click.IntRange(min=1), default=DEFAULT_PEERS_PER_IP, show_default=True,
              help="Peer ids one address (an IPv6 /64) may have registered; a REGISTER beyond it gets ERROR BUSY and a close.")  # fmt: skip
@click.option("--max-holders", type=click.IntRange(min=1, max=1000), default=50, show_default=True,
              help="Most holders returned per WHO_HAS.")  # fmt: skip
@click.option("--stats-interval", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds between stats lines in the log.")  # fmt: skip
@click.option("--retention-days", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Days a published file stays listed once no peer holds it (0: for ever).")  # fmt: skip
@click.option("--require-identity", is_flag=True, help="Admit identified nodes only (chunkswarm 0.x peers that prove no node key are refused).")
@click.option("--max-files-per-publisher", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Files one publisher (a node id; unidentified: an IP, a /64 for IPv6) may publish.")  # fmt: skip
@click.option("--max-manifest-mib-per-publisher", type=click.IntRange(min=1), default=64, show_default=True,
              help="MiB of manifests (32 bytes a chunk) one publisher may publish.")  # fmt: skip
@click.option("--io", type=click.Choice(IO_PATHS), default=DEFAULT_IO, show_default=True,
              help="How sockets are read and written: 'epoll', one epoll for all (Linux, the fast path); 'streams', trio's generic streams.")  # fmt: skip
@click.option("--http", "http", default=None, metavar="HOST:PORT",
              help="Serve the web UI, JSON API and /metrics here  [default: the tracker's host, its port + 1; taken: none]")  # fmt: skip
@click.option("--no-http", is_flag=True, help="Serve no web UI.")
@click.option("--max-http-connections", type=click.IntRange(min=1), default=256, show_default=True,
              help="HTTP connections open at once; more are closed at accept.")  # fmt: skip
@click.option("--state", metavar="redis://HOST:PORT/N", default=None,
              help="Keep peers, replicas and the catalogue in this Redis database, shared with the other trackers given it  [default: in memory, the catalogue in --db]")  # fmt: skip
@click.option("--collection-versions", type=click.IntRange(min=1), default=100, show_default=True,
              help="Versions of each collection kept (the last N; older ones are pruned unless younger than --collection-minutes).")
@click.option("--collection-minutes", type=click.FloatRange(min=0), default=15.0, show_default=True,
              help="Also keep every version of a collection stored in the last M minutes.")
@click.option("--mdns/--no-mdns", default=True, show_default=True,
              help="Advertise the tracker on the LAN by mDNS (_chunkswarm._tcp), so peers find it without --tracker.")  # fmt: skip
@swarm_options
@bittorrent_options
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="INFO", show_default=True)
@log_file_option
def tracker_command(
    host: str,
    port: int,
    db_path: str | None,
    heartbeat_interval: float,
    peer_timeout: float | None,
    idle_timeout: float | None,
    max_connections: int,
    max_connections_per_ip: int,
    max_peers_per_ip: int,
    max_holders: int,
    stats_interval: float,
    retention_days: float,
    require_identity: bool,
    max_files_per_publisher: int,
    max_manifest_mib_per_publisher: int,
    io: IoPath,
    http: str | None,
    no_http: bool,
    max_http_connections: int,
    state: str | None,
    swarm: SwarmFile | None,
    allow: AllowList,
    bittorrent: BitTorrentConfig,
    log_level: str,
    log_file: pathlib.Path | None,
    mdns: bool,
    collection_versions: int,
    collection_minutes: float,
) -> None:
    """Run the tracker of a swarm until SIGINT or SIGTERM."""
    setup_logging(log_level, log_file)
    if db_path is None:
        db_path = default_db_path()
    http_host, http_port = _http_address(host, http, no_http)
    try:
        if state is not None:
            from tracker.shared_store import parse_state_url  # the Redis client is imported only when asked for

            parse_state_url(state)
        os.makedirs(os.path.dirname(os.path.abspath(db_path)), exist_ok=True)
        config = TrackerConfig(
            host=host,
            port=port,
            db_path=db_path,
            heartbeat_interval=heartbeat_interval,
            peer_timeout=peer_timeout if peer_timeout is not None else 3 * heartbeat_interval,
            idle_timeout=idle_timeout if idle_timeout is not None else 4 * heartbeat_interval,
            max_connections=max_connections,
            max_connections_per_ip=max_connections_per_ip,
            max_peers_per_ip=max_peers_per_ip,
            max_holders=max_holders,
            stats_interval=stats_interval,
            retention=retention_days * 86400,
            io=io,
            # The tracker's identity: its key beside its database.
            node_key=load_or_create_key(pathlib.Path(db_path).with_name(KEY_FILE)),
            require_identity=require_identity,
            max_files_per_publisher=max_files_per_publisher,
            max_manifest_bytes_per_publisher=max_manifest_mib_per_publisher * 1024 * 1024,
            swarm=swarm,
            allow=allow,
            http_host=http_host,
            http_port=http_port,
            max_http_connections=max_http_connections,
            state=state,
            mdns=mdns,
            bittorrent=bittorrent,
            collection_versions=collection_versions,
            collection_history=collection_minutes * 60,
        )
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    _raise_fd_limit(max_connections + 64)
    try:
        trio.run(_run_until_signal, config)
    except StorageError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


