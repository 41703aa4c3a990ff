"""The options and plumbing every peer command shares (seed, get, ls, stats, publish, sync): the tracker list, the peer's
own options, the :class:`PeerConfig` they build, and ``trio.run`` with chunkswarm's errors as click's.

Kept apart from the commands, and light: ``chunkswarm get`` and ``seed`` are each a process per swarm member, and
what they import is CPU every one of them pays at start (issue 16); rich, the HTTP gateway and the collection
commands are not imported from here.
"""

from __future__ import annotations

import gc
import logging
import pathlib
import re
import signal
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click
import trio

from chunkswarm.console import LOG_LEVELS, create_state_dir
from chunkswarm.swarm_command import ALLOW_OPTION, SWARM_OPTION
from common.address import TRACKER_PORT, parse_address
from common.errors import ChunkswarmError, ValidationError
from common.manifest import check_publishable_name
from common.wording import format_size, plural
from peer.config import PeerConfig, default_state_dir

if TYPE_CHECKING:
    from peer.node import Peer

__all__ = ["Trackers", "DEFAULT_TRACKER", "parse_trackers", "tracker_settings"]

logger = logging.getLogger("peer")

DEFAULT_TRACKER = f"127.0.0.1:{TRACKER_PORT}"
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


def _name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_publishable_name(value)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


COLLECTION_OPTION = click.option("--collection", "collection_name", metavar="NAME", callback=_name, default=None,
                                 help="The collection (a named, signed set of files) to publish or get.")  # fmt: skip
