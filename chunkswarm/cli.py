"""The ``chunkswarm`` command: a click group whose subcommands build config objects and run trio.

Lives outside ``common/`` because it imports both ``tracker`` and ``peer``;
each of those owns its subcommands and this module only gathers them.
"""

from __future__ import annotations

import click

from chunkswarm import __version__
from chunkswarm.get_command import get
from chunkswarm.peer_commands import peer_commands
from chunkswarm.tracker_command import tracker_command
from common.address import TRACKER_PORT
from peer.config import default_state_dir

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, help=f"""Share files as verified chunks: run a tracker, seed files, get them from the swarm.

    \b
    A tracker address without a port means port {TRACKER_PORT}.
    Peers (seed, get) keep their state in {default_state_dir()} (--state-dir picks another folder).""")
@click.version_option(__version__, prog_name="chunkswarm")
def cli() -> None:
    pass


cli.add_command(tracker_command)
cli.add_command(get)
for _command in peer_commands:
    cli.add_command(_command)


def main() -> None:
    cli()
