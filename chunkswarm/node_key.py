"""The node's own key, kept in its state folder: ``<state dir>/node.key`` (PEM, mode 0600).

The app is the only layer that decides paths: it loads the key here, or
creates it on first use, and hands it to the engine in ``PeerConfig.node_key``
(``TrackerConfig.node_key`` for the tracker, whose key lives beside its
database). The key is the node's identity (PROTOCOL.md §8.6): the files it
publishes are its own to unpublish, and the tracker binds its peer record to it.
"""

from __future__ import annotations

import contextlib
import os
import pathlib

import click

from common.errors import ValidationError
from common.identity import NodeKey

__all__ = ["KEY_FILE", "load_or_create_key"]

KEY_FILE = "node.key"


def load_or_create_key(path: pathlib.Path) -> NodeKey:
    """The key in ``path``, created (atomically, mode 0600) if there is none; a click error naming the file otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise click.ClickException(f"cannot read the node key {path}: {exc.strerror or exc}") from None
    try:
        return NodeKey.from_pem(data)
    except ValidationError as exc:
        raise click.ClickException(
            f"{path} is not a chunkswarm node key ({exc}); move it away and a new key (a new node id) is made"
        ) from None


def _create(path: pathlib.Path) -> NodeKey:
    key = NodeKey.generate()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key.to_pem())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # never replaces a key another process has just written
        except FileExistsError:
            return load_or_create_key(path)
    except OSError as exc:
        raise click.ClickException(f"cannot create the node key {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return key
