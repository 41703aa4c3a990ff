#!/usr/bin/env python3
"""One chunkswarm peer with an interactive shell: connect, upload, list, download, status.

The peer serves chunks to the swarm the whole time the shell waits for input.
Type ``h`` at the prompt for the commands; ``x`` or Ctrl-D leaves.
"""

from __future__ import annotations

import pathlib
import sys

import attrs
import click
import trio
from rich.console import Console

from chunkswarm.console import LOG_LEVELS, create_state_dir, setup_logging, stderr_console
from chunkswarm.gateway_option import gateway_config, http_options
from chunkswarm.node_key import claim_node_key
from chunkswarm.peer_options import Trackers, parse_trackers, tracker_settings
from chunkswarm.shell import ShellConfig, run_shell
from chunkswarm.swarm_command import swarm_options
from common.address import TRACKER_PORT
from common.allow import AllowList
from common.errors import ChunkswarmError
from common.manifest import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from common.swarm import SwarmFile
from peer.config import PeerConfig, default_state_dir

HERE = pathlib.Path(__file__).resolve().parent


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--tracker", multiple=True, default=(f"127.0.0.1:{TRACKER_PORT}",), show_default=True, callback=parse_trackers,
              help=f"Tracker address HOST[:PORT] (port {TRACKER_PORT} if left out); given again, trackers of the same swarm tried in turn.")
@click.option("--share-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=HERE / "sample_files" / "dir2",
              help="Directory whose files u publishes  [default: sample_files/dir2]")
@click.option("--download-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=pathlib.Path("downloads"),
              show_default=True, help="Directory d saves files in.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="Port to serve chunks on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve chunks on.")
@click.option("--label", default="demo-peer", show_default=True, help="This peer's name in its own and other peers' logs.")
@click.option("--chunk-size", type=click.IntRange(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE), default=None,
              help="Chunk size in bytes for the files u publishes  [default: from each file's size, as every publisher does]")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=None,
              help=f"Where the peer keeps its manifest cache  [default: {default_state_dir()}]")
@swarm_options
@http_options
@click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="WARNING", show_default=True)
def main(tracker: Trackers, share_dir: pathlib.Path, download_dir: pathlib.Path, port: int, host: str, label: str,
         chunk_size: int | None, state_dir: pathlib.Path | None, swarm: SwarmFile | None, allow: AllowList, log_level: str,
         http: tuple[str, int] | None, http_dir: pathlib.Path | None, http_max_upload: int) -> None:  # fmt: skip
    """Start one peer and an interactive shell (h lists the commands)."""
    setup_logging(log_level)
    console = stderr_console()
    peer = PeerConfig(**tracker_settings(tracker), listen_host=host, listen_port=port, label=label, chunk_size=chunk_size, swarm=swarm, allow=allow,
                      **({"state_dir": state_dir} if state_dir is not None else {}))  # fmt: skip
    if create_state_dir(peer.state_dir):
        console.print(f"created {peer.state_dir}: the peer keeps its state there (--state-dir picks another folder)", highlight=False)
    # The node's key: what u publishes, r can take back later (and from chunkswarm unpublish).
    peer = attrs.evolve(peer, node_key=claim_node_key(peer.state_dir))
    # The gateway keeps what it fetches where d saves downloads, unless --http-dir says otherwise.
    gateway = gateway_config(http, http_dir or download_dir, peer.state_dir, http_max_upload)
    config = ShellConfig(peer, share_dir, download_dir, prompt=sys.stdin.isatty(), gateway=gateway)
    try:
        trio.run(run_shell, config, Console(), console)
    except ChunkswarmError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot serve chunks on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None


if __name__ == "__main__":
    main()
