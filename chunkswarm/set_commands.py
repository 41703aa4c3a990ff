"""``chunkswarm collection token`` and ``collection fetch``: a gateway's sets from the command line (``peer.gateway.sets``)."""

from __future__ import annotations

import pathlib

import click

from chunkswarm.console import create_state_dir
from chunkswarm.gateway_option import TOKEN_FILE, load_or_create_token
from common.errors import ChunkswarmError, ValidationError
from common.manifest import check_publishable_name
from peer.config import default_state_dir
from peer.set_client import fetch_set_file, find_index

__all__ = ["token_command", "fetch_command"]


@click.command("token")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=None,
              help=f"The node's state folder  [default: {default_state_dir()}]")  # fmt: skip
def token_command(state_dir: pathlib.Path | None) -> None:
    """Print this node's gateway write token (made now if there is none), for POST /api/v1/sets/... as a bearer token."""
    folder = state_dir if state_dir is not None else default_state_dir()
    create_state_dir(folder)
    click.echo(load_or_create_token(folder))
    click.echo(f"(kept in {folder / TOKEN_FILE}; send it as 'Authorization: Bearer TOKEN'; remove the file and restart "
               "the gateway for a new one)", err=True)  # fmt: skip


def _root(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    try:
        root = bytes.fromhex(value)
    except ValueError:
        root = b""
    if len(root) != 32:
        raise click.BadParameter("a root is 64 hexadecimal digits")
    return root


@click.command("fetch")
@click.argument("gateway", metavar="URL")
@click.argument("name", metavar="SET")
@click.argument("which", metavar="INDEX|PATH")
@click.option("--root", required=True, callback=_root, help="The root of the set's version you kept (64 hexadecimal digits).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
              help="Where to write the file  [default: its name, here]")  # fmt: skip
@click.option("--proof-out", type=click.Path(dir_okay=False, path_type=pathlib.Path), default=None,
              help="Also write its proof here (for `collection verify`).")  # fmt: skip
def fetch_command(gateway: str, name: str, which: str, root: bytes, output: pathlib.Path | None, proof_out: pathlib.Path | None) -> None:
    """Fetch entry INDEX (or the file at PATH) of SET from the gateway at URL, and keep it only if it belongs to the version ROOT.

    The proof the gateway sends must place the entry under ROOT, and the bytes
    must be that entry's file; otherwise nothing is written and the exit code is 1.
    """
    try:
        check_publishable_name(name)
        index = int(which) if which.isdigit() else find_index(gateway, name, root, which)
        out = output if output is not None else pathlib.Path(which.rsplit("/", 1)[-1] if not which.isdigit() else f"{name}-{index}")
        fetched = fetch_set_file(gateway, name, index, root, out)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    except ChunkswarmError as exc:
        raise click.ClickException(f"NOT VERIFIED: {exc}") from None
    if proof_out is not None:
        proof_out.write_text(fetched.proof.to_json() + "\n")
    entry = fetched.proof.entry
    click.echo(f"verified: {out} is {entry.path} of set {name} version {fetched.proof.sequence} (root {root.hex()})")
