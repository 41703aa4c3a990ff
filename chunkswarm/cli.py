"""The ``chunkswarm`` command: a click group whose subcommands build config objects and run trio.

Lives outside ``common/`` because it imports both ``tracker`` and ``peer``;
each of those owns its subcommands and this module only gathers them.
"""

from __future__ import annotations

import click

from chunkswarm import __version__
from chunkswarm.peer_commands import peer_commands
from chunkswarm.tracker_command import tracker_command

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chunkswarm")
def cli() -> None:
    """Share files as verified chunks: run a tracker, seed files, get them from the swarm."""


cli.add_command(tracker_command)
for _command in peer_commands:
    cli.add_command(_command)


def main() -> None:
    cli()
