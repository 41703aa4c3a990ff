"""``chunkswarm sync DIR --collection NAME`` and ``chunkswarm sync status DIR``: folder sync and its live view.

The engine is ``peer/sync/``; this module builds its configuration from the
command line, runs it until SIGINT/SIGTERM, and draws the status file a
running sync keeps in ``DIR/.chunkswarm/status.json`` with rich.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
from typing import Any

import attrs
import click
import trio
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from chunkswarm.console import setup_logging
from chunkswarm.node_key import KEY_FILE, claim_node_key, load_or_create_key
from chunkswarm.peer_options import _config, _peer_options, _run, _serve_until_signalled
from common.address import format_address
from common.errors import ChunkswarmError
from common.identity import format_node_id
from common.manifest import validate_name
from common.sync_rules import STATE_FOLDER, short_node
from common.wording import format_size
from peer.config import PeerConfig
from peer.node import open_peer
from peer.sync.beneath import Root
from peer.sync.engine import SyncConfig, SyncFolder
from peer.sync.state import StateFolder
from peer.sync.status import STATUS_FILE

__all__ = ["sync"]

logger = logging.getLogger("peer")


class _SyncGroup(click.Group):
    """``sync DIR ...`` runs the sync; ``sync status DIR`` shows one: the first word decides."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_SyncGroup)
def sync() -> None:
    """Keep a folder in step with every other node syncing the same collection.

    \b
    chunkswarm sync DIR --collection NAME [--owner KEY]   sync DIR until interrupted
    chunkswarm sync status DIR                           the nodes, the latest changes, transfers
    """


def _owner_key(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[bytes, ...]:
    keys = []
    for value in values:
        try:
            key = bytes.fromhex(value)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise click.BadParameter(f"{value!r} is not a node's public key (64 hex digits, as `chunkswarm sync` prints it)")
        keys.append(key)
    return tuple(keys)


def _collection_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return validate_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@sync.command("run", hidden=True)
@click.argument("folder", type=click.Path(file_okay=False, path_type=pathlib.Path))
@click.option("--collection", required=True, callback=_collection_name, help="The collection this folder is kept in step with.")
@click.option("--owner", "owners", multiple=True, callback=_owner_key, metavar="KEY",
              help="Make the node with this public key an owner of the collection too, so it can sync changes back (repeatable).")
@click.option("--rescan-interval", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds between full scans (file-system events start one at once).")
@click.option("--fsync/--no-fsync", default=True, show_default=True, help="Flush each file written to the device before it is renamed into place.")
@_peer_options
def run(folder: pathlib.Path, collection: str, owners: tuple[bytes, ...], rescan_interval: float, fsync: bool, log_level: str,
        **options: Any) -> None:  # fmt: skip
    """Sync FOLDER with the collection until interrupted."""
    setup_logging(log_level)
    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    config = _config(**options)
    key = claim_node_key(config.state_dir)
    if key.public_key != load_or_create_key(config.state_dir / KEY_FILE).public_key:
        raise click.ClickException(f"another process runs as this node (state folder {config.state_dir}); "
                                   "sync needs the node's own key: stop it, or give --state-dir another folder")  # fmt: skip
    config = attrs.evolve(config, node_key=key)
    sync_config = SyncConfig(folder, collection, owners, rescan_interval=rescan_interval, fsync=fsync)
    _run(_sync, config, sync_config)


async def _sync(config: PeerConfig, sync_config: SyncConfig) -> None:
    async with open_peer(config) as peer:
        key = config.node_key
        logger.info("node %s (key %s) serving on %s", format_node_id(key.node_id), key.public_key.hex(), format_address(*peer.listen_address))
        swarm = " --swarm FILE (this swarm's file)" if config.swarm is not None else ""
        logger.info("syncing %s with collection %s; another node joins with: chunkswarm sync DIR --collection %s%s "
                    "(and an owner adds it with --owner ITS-KEY)", sync_config.root, sync_config.collection, sync_config.collection, swarm)  # fmt: skip
        await peer.connect(retry=True)
        folder = SyncFolder(peer, sync_config)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(folder.run)
            await _serve_until_signalled(peer)
            nursery.cancel_scope.cancel()


# -- status ---------------------------------------------------------------------------
def _read_status(folder: pathlib.Path) -> dict[str, Any] | None:
    state = StateFolder(Root(folder))  # (read beneath the folder, as the sync writes it: never through a link)
    try:
        text = state.read(STATUS_FILE)
        data = json.loads(text) if text is not None else None
    except ChunkswarmError as exc:  # (a .chunkswarm that is a link: said, not read through)
        raise click.ClickException(str(exc)) from None
    except ValueError:
        return None
    finally:
        state.close(root=True)
    return data if isinstance(data, dict) else None


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def status_view(status: dict[str, Any] | None, folder: pathlib.Path, *, files: int = 20) -> Group:
    """The status of the sync of ``folder`` as rich renderables: nodes, latest changes, transfers."""
    if status is None:
        return Group(Text(f"{folder}: no sync has run here yet (no {STATE_FOLDER}/status.json)"))
    now = time.time()
    me = status.get("me", "")
    stale = now - float(status.get("written", 0)) > 15
    head = Text(f"{folder} · collection {status.get('collection')} · version {status.get('sequence')} · "
                f"{status.get('files_total', 0):,} files" + (" · this node's sync is not running" if stale else ""))  # fmt: skip
    if status.get("refused"):
        head.append(f"\nnot an owner yet: {status['refused']}", style="yellow")
    nodes = Table(title="nodes", title_justify="left")
    for column in ("node", "state", "last seen"):
        nodes.add_column(column)
    for node in status.get("nodes", []):
        ident = short_node(bytes.fromhex(node["id"]))
        online = node["online"] and not (stale and node["id"] == me)
        seen = float(node.get("last_seen") or 0)
        nodes.add_row(Text(ident + (" (this node)" if node["id"] == me else "")), Text("online" if online else "offline",
                      style="green" if online else "red"), Text(_ago(now - seen) if seen else "never"))  # fmt: skip
    changes = Table(title="latest changes", title_justify="left")
    for column in ("path", "size", "changed", "by"):
        changes.add_column(column)
    for entry in status.get("files", [])[:files]:
        when = entry["mtime_ns"] / 1e9
        size = "deleted" if entry["deleted"] else format_size(entry["size"])
        changes.add_row(Text(entry["path"]), Text(size), Text(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))),
                        Text(short_node(bytes.fromhex(entry["by"])) if entry["by"] else "?"))  # fmt: skip
    parts: list[Any] = [head, nodes, changes]
    transfers = status.get("transfers", [])
    if transfers and not stale:
        progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn())
        for transfer in transfers:
            progress.add_task(transfer["path"], total=transfer["size"], completed=transfer["done"])
        parts.append(progress)
    return Group(*parts)


@sync.command("status")
@click.argument("folder", type=click.Path(file_okay=False, exists=True, path_type=pathlib.Path))
@click.option("--watch/--once", default=None, help="Keep the view live (the default on a terminal) or print it once.")
@click.option("--files", type=click.IntRange(1, 1000), default=20, show_default=True, help="Latest changes shown.")
def status(folder: pathlib.Path, watch: bool | None, files: int) -> None:
    """Show the sync of FOLDER: the collection's nodes (online, last seen), the latest changes and who made them, transfers."""
    console = Console()
    folder = folder.absolute()
    if watch is None:
        watch = console.is_terminal
    if not watch:
        if not console.is_terminal:
            console.width = max(console.width, 160)
        console.print(status_view(_read_status(folder), folder, files=files))
        return
    try:
        with Live(status_view(_read_status(folder), folder, files=files), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(0.5)
                live.update(status_view(_read_status(folder), folder, files=files))
    except KeyboardInterrupt:
        pass
