"""The node's own commands: ``chunkswarm id`` (who this node is) and ``chunkswarm unpublish`` (take back what it published)."""

from __future__ import annotations

import pathlib

import click

from chunkswarm.console import create_state_dir, setup_logging
from chunkswarm.node_key import KEY_FILE, load_or_create_key
from chunkswarm.peer_options import _LOG_LEVEL_OPTION, _TRACKER_OPTION, Trackers, _run, tracker_settings
from common.address import format_address
from common.errors import ChunkswarmError
from common.identity import NodeKey, short_id
from peer.catalogue import open_catalogue, resolve_entry
from peer.config import PeerConfig, default_state_dir

__all__ = ["node_id", "unpublish"]

_STATE_DIR_OPTION = click.option("--state-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=None,
                                 help=f"The node's state folder, where its key is  [default: {default_state_dir()}]")  # fmt: skip


def _node_key(state_dir: pathlib.Path | None) -> tuple[pathlib.Path, NodeKey]:
    folder = state_dir if state_dir is not None else default_state_dir()
    create_state_dir(folder)
    return folder / KEY_FILE, load_or_create_key(folder / KEY_FILE)


@click.command("id")
@_STATE_DIR_OPTION
def node_id(state_dir: pathlib.Path | None) -> None:
    """Print this node's id (and its short form), made from the key in the state folder (created on first use)."""
    path, key = _node_key(state_dir)
    click.echo(f"{key.display}\nshort id {short_id(key.node_id)} (key: {path})\npublic key {key.public_key.hex()}")


@click.command()
@click.argument("files", nargs=-1, required=True)
@_STATE_DIR_OPTION
@_TRACKER_OPTION
@_LOG_LEVEL_OPTION
def unpublish(files: tuple[str, ...], state_dir: pathlib.Path | None, tracker: Trackers, log_level: str) -> None:
    """Take FILES (names or ids, as get takes them) that this node published out of the tracker's catalogue.

    A file leaves once every node that published it has unpublished it. A seeder
    that still has the file in its folder publishes it again: remove the file
    from the folder (or stop the seeder) first.
    """
    setup_logging(log_level)
    _, key = _node_key(state_dir)
    config = PeerConfig(**tracker_settings(tracker), node_key=key)
    _run(_unpublish, config, files)


async def _unpublish(config: PeerConfig, queries: tuple[str, ...]) -> None:
    where = format_address(*config.tracker)
    async with open_catalogue(config) as catalogue:
        entries = await catalogue.list_files("")
        failed = []
        for query in queries:
            try:
                entry = resolve_entry(query, entries)
                await catalogue.unpublish(entry.file_id)
            except ChunkswarmError as exc:
                failed.append(f"{query}: {exc}")
                continue
            click.echo(f"unpublished {entry.name} ({entry.file_id.hex()[:16]}) from {where}; a seeder that still has it publishes it again")
    if failed:
        raise click.ClickException("; ".join(failed))

