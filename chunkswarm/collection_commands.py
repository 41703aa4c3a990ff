"""Collections on the command line (PROTOCOL.md §8.11): ``publish DIR --collection NAME``, ``get --collection`` (from
``chunkswarm.get_command``), and ``collection allow | show | proof | verify`` (and ``token | fetch``, from ``chunkswarm.set_commands``)."""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import attrs
import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chunkswarm.console import setup_logging
from chunkswarm.node_commands import _STATE_DIR_OPTION, _node_key
from chunkswarm.node_key import KEY_FILE, claim_node_key, load_or_create_key
from chunkswarm.peer_options import _LOG_LEVEL_OPTION, _TRACKER_OPTION, Trackers, _config, _name, _peer_options, _run, _serve_until_signalled, tracker_settings
from chunkswarm.set_commands import fetch_command, token_command
from common.address import format_address
from common.collection import CollectionVersion, sign_version
from common.errors import ChunkswarmError, NotAnOwner, TrackerError, ValidationError
from common.identity import PUBLIC_KEY_SIZE, NodeKey, format_node_id, node_id, parse_node_id, short_id
from common.messages import GetManifest, ManifestReply
from common.wording import format_size, plural
from peer.catalogue import open_catalogue
from peer.collection_files import FileProof, make_proof, verify_file
from peer.collection_transfer import GetReport, get_tree, publish_tree
from peer.collections import fetch_following, publish_collection
from peer.config import PeerConfig
from peer.node import open_peer

__all__ = ["publish", "collection", "get_collection_into"]

logger = logging.getLogger("peer")


# -- publish ---------------------------------------------------------------------------
@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=pathlib.Path))
@click.option("--collection", "collection_name", metavar="NAME", callback=_name, required=True,
              help="The collection's name: its first version makes this node its owner.")  # fmt: skip
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve the files afterwards, as seed does, until interrupted.")
@_peer_options
def publish(folder: pathlib.Path, collection_name: str, serve: bool, log_level: str, **options: Any) -> None:
    """Publish every file under FOLDER (subfolders included) as a new version of collection NAME, signed by this node.

    Files are hashed in parallel and published with the version in one round trip;
    a version equal to the current one is not published again.
    """
    setup_logging(log_level)
    config = _config(**options)
    signer = load_or_create_key(config.state_dir / KEY_FILE)  # the node's own key signs, whoever runs as the node
    config = attrs.evolve(config, node_key=claim_node_key(config.state_dir))
    _run(_publish, config, folder, collection_name, signer, serve)


async def _publish(config: PeerConfig, folder: pathlib.Path, name: str, signer: NodeKey, serve: bool) -> None:
    async with open_peer(config) as peer:
        await peer.connect()
        report = await publish_tree(peer, folder, name, signer)
        version = report.version
        state = "published" if report.changed else "unchanged, still"
        logger.info("collection %r %s at version %d (root %s): %s, %s", name, state, version.sequence, version.root.hex(),
                    plural(report.files, "file"), format_size(report.total_bytes))  # fmt: skip
        click.echo(f"collection {name} version {version.sequence} root {version.root.hex()}")
        if serve:
            logger.info("serving %s on %s", folder, format_address(*peer.listen_address))
            await _serve_until_signalled(peer)


# -- get --collection (called by chunkswarm.get_command) -----------------------------------
def get_collection_into(config: PeerConfig, name: str, folder: pathlib.Path, *, force: bool, keep_seeding: bool) -> None:
    report = _run(_get, config, name, folder, force, keep_seeding)
    version = report.version
    click.echo(f"collection {name} version {version.sequence} root {version.root.hex()}: "
               f"{plural(len(version.entries), 'entry', 'entries')}, {report.downloaded} fetched into {folder}")  # fmt: skip


async def _get(config: PeerConfig, name: str, folder: pathlib.Path, force: bool, keep_seeding: bool) -> GetReport:
    async with open_peer(config) as peer:
        await peer.connect()
        report = await get_tree(peer, name, folder, force=force)
        if keep_seeding:
            await _serve_until_signalled(peer)
        return report


# -- collection allow | show | proof | verify ----------------------------------------------
@click.group()
def collection() -> None:
    """Look at, prove and change collections: who owns one, what it holds, whether a file belongs to it."""


collection.add_command(token_command)
collection.add_command(fetch_command)


def _public_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) == PUBLIC_KEY_SIZE:
        return key
    try:
        parse_node_id(text)
    except ValidationError:
        raise click.BadParameter(f"{text!r} is not a public key (64 hexadecimal digits, as `chunkswarm id` prints it)") from None
    raise click.BadParameter("that is a node id, which names a key but cannot be turned into one: give the node's public key, "
                             "the line `public key ...` of `chunkswarm id` on that node")  # fmt: skip


@collection.command()
@click.argument("name", callback=_name)
@click.argument("key", metavar="PUBLIC-KEY")
@_STATE_DIR_OPTION
@_TRACKER_OPTION
@_LOG_LEVEL_OPTION
def allow(name: str, key: str, state_dir: pathlib.Path | None, tracker: Trackers, log_level: str) -> None:
    """Make the node with PUBLIC-KEY an owner of collection NAME too (a new version, signed by this node, an owner)."""
    setup_logging(log_level)
    added = _public_key(key)
    _, signer = _node_key(state_dir)
    version = _run(_allow, PeerConfig(**tracker_settings(tracker), node_key=signer), name, added)
    click.echo(f"collection {name} version {version.sequence}: owners {', '.join(short_id(node_id(k)) for k in version.owners)}")


async def _allow(config: PeerConfig, name: str, added: bytes) -> CollectionVersion:
    signer = config.node_key
    async with open_catalogue(config) as catalogue:
        current = await fetch_following(catalogue.link, name)
        if current is None:
            raise TrackerError(f"the tracker has no collection named {name!r}")
        if signer.public_key not in current.owners:
            raise NotAnOwner(f"this node ({short_id(signer.node_id)}) is not an owner of {name!r}: only an owner can add one")
        if added in current.owners:
            return current
        version = sign_version(signer, name, current.sequence + 1, current.root, current.entries, (*current.owners, added))
        await publish_collection(catalogue.link, version)
        return version


def _show_options(func: Any) -> Any:
    return _TRACKER_OPTION(_LOG_LEVEL_OPTION(func))


@collection.command()
@click.argument("name", callback=_name)
@_show_options
def show(name: str, tracker: Trackers, log_level: str) -> None:
    """Show collection NAME: its root, sequence, owners and entries (every version checked from the first)."""
    setup_logging(log_level)
    version = _run(_fetch, PeerConfig(**tracker_settings(tracker)), name)
    out = Console()
    out.print(Text(f"collection {name}, version {version.sequence}\nroot {version.root.hex()}\nsigned by {format_node_id(node_id(version.signer))}"))
    for key in version.owners:
        out.print(Text(f"owner {format_node_id(node_id(key))} (public key {key.hex()})"))
    table = Table(title=f"{plural(len(version.entries), 'entry', 'entries')}", title_justify="left")
    for column in ("path", "size", "file id", "mode", "changed by"):
        table.add_column(column)
    for entry in version.entries:
        size = "deleted" if entry.deleted else format_size(entry.size)
        table.add_row(Text(entry.path), size, "" if entry.deleted else entry.file_id.hex()[:16], f"{entry.mode:04o}", entry.modified_by.hex())
    out.print(table)


async def _fetch(config: PeerConfig, name: str) -> CollectionVersion:
    async with open_catalogue(config) as catalogue:
        version = await fetch_following(catalogue.link, name)
    if version is None:
        raise TrackerError(f"the tracker has no collection named {name!r}")
    return version


@collection.command()
@click.argument("name", callback=_name)
@click.argument("path")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None, help="Write the proof here [default: stdout].")
@_show_options
def proof(name: str, path: str, output: pathlib.Path | None, tracker: Trackers, log_level: str) -> None:
    """Write the proof that PATH belongs to the current version of NAME (for `collection verify`)."""
    setup_logging(log_level)
    config = PeerConfig(**tracker_settings(tracker))
    made = _run(_proof, config, name, path)
    if output is None:
        click.echo(made.to_json())
    else:
        output.write_text(made.to_json() + "\n")
        click.echo(f"proof of {path} in {name} version {made.sequence} (root {made.root.hex()}) written to {output}", err=True)


async def _proof(config: PeerConfig, name: str, path: str) -> FileProof:
    async with open_catalogue(config) as catalogue:
        version = await fetch_following(catalogue.link, name)
        if version is None:
            raise TrackerError(f"the tracker has no collection named {name!r}")
        found = version.entry(path)
        chunk_size = 0
        if found is not None and not found[1].deleted:
            chunk_size = (await catalogue.link.request(GetManifest(found[1].file_id), ManifestReply, timeout=catalogue.timeout)).manifest.chunk_size
        return make_proof(version, path, chunk_size or 1024)


@collection.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path))
@click.option("--root", required=True, help="The version's root you kept (64 hexadecimal digits).")
@click.option("--proof", "proof_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
              help="The proof, as `collection proof` writes it.")  # fmt: skip
def verify(file: pathlib.Path, root: str, proof_file: pathlib.Path) -> None:
    """Check that FILE is the file the proof names, and that it belongs to the version whose root is ROOT. Exit 1 if not."""
    try:
        kept = bytes.fromhex(root)
    except ValueError:
        raise click.BadParameter("a root is 64 hexadecimal digits", param_hint="--root") from None
    try:
        made = FileProof.from_json(proof_file.read_text())
        entry = verify_file(file, made, kept)
    except ChunkswarmError as exc:
        raise click.ClickException(f"NOT VERIFIED: {exc}") from None
    click.echo(f"verified: {file} is {entry.path} of collection {made.collection} version {made.sequence} (root {root})")

