"""The node's own key, kept in its state folder: ``<state dir>/node.key`` (PEM, mode 0600).

The app is the only layer that decides paths: it loads the key here, or
creates it on first use, and hands it to the engine in ``PeerConfig.node_key``
(``TrackerConfig.node_key`` for the tracker, whose key lives beside its
database). The key is the node's identity (PROTOCOL.md §8.6): the files it
publishes are its own to unpublish, and the tracker binds its peer record to it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import pathlib

import click

from common.errors import ValidationError
from common.identity import NodeKey, short_id
from peer.storage.fs import temporary_name

__all__ = ["KEY_FILE", "load_or_create_key", "claim_node_key", "write_private_once"]

logger = logging.getLogger(__name__)

KEY_FILE = "node.key"
#: Held (``flock``) by the process that runs as the node: one peer record per key on a tracker.
LOCK_FILE = "node.key.lock"
#: Lock files held until the process exits (``flock`` is released with the process, even when killed).
_held: list[int] = []


def claim_node_key(state_dir: pathlib.Path) -> NodeKey:
    """The key a process that joins the swarm runs with: the node's own, unless another process runs as the node.

    A tracker binds one peer record to one key (PROTOCOL.md §8.6), so two
    processes registering with one key would take the record from each other
    at every reconnection. The first process (a seeder, the shell) takes an
    ``flock`` on ``node.key.lock`` for its lifetime and runs as the node; a
    second one on the same state folder runs with a fresh key of its own, and
    says so: what it publishes is not the node's to unpublish later.
    """
    key = load_or_create_key(state_dir / KEY_FILE)
    path = state_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise click.ClickException(f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise click.ClickException(f"cannot lock {path}: {exc.strerror or exc}") from None
        fresh = NodeKey.generate()
        logger.warning(
            "another process runs as node %s (it holds %s): this one runs as node %s for this run only; "
            "what it publishes only it can unpublish", short_id(key.node_id), path, short_id(fresh.node_id),
        )
        return fresh
    _held.append(fd)
    return key


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
    if not write_private_once(path, key.to_pem(), "the node key"):
        return load_or_create_key(path)  # another process has just made it
    return key


def write_private_once(path: pathlib.Path, data: bytes, what: str) -> bool:
    """Write ``data`` to ``path`` (mode 0600, complete or not at all) unless it exists; False if it did. A click error naming ``what``."""
    # A temporary of this write's own (not only this process's): two threads making the key at once would
    # otherwise share one, and the loser's clean-up would unlink the winner's before its link.
    temporary = path.with_name(temporary_name(path.name))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)  # never replaces what another process has just written
        except FileExistsError:
            return False
    except OSError as exc:
        raise click.ClickException(f"cannot create {what} {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    return True
