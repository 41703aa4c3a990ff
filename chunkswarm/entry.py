"""The ``chunkswarm`` command's entry point: ``get`` and ``seed`` go straight to their command, the rest through the group.

A swarm is one process per member, and each pays its start-up in CPU (issue 16: libtorrent's is 0.04 CPU-s). So
``chunkswarm get`` and ``chunkswarm seed`` load their own command module only, not the group in
``chunkswarm.cli`` with its configuration file machinery, when no configuration file applies (none at the
default path, ``CHUNKSWARM_CONFIG`` unset); with one, or with ``--config`` before the command's name, every
command goes through the group, which reads the file.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from chunkswarm.settings import CONFIG_ENVVAR, default_config_path

__all__ = ["main", "DIRECT"]

#: The commands started without the group, as ``module:attribute`` (the same as ``chunkswarm.cli.SUBCOMMANDS`` has).
DIRECT: dict[str, str] = {"get": "chunkswarm.get_command:get", "seed": "chunkswarm.peer_commands:seed"}


def main(prog_name: str = "chunkswarm") -> None:
    args = sys.argv[1:]
    if args and args[0] in DIRECT and not os.environ.get(CONFIG_ENVVAR) and not default_config_path().exists():
        module, _, attribute = DIRECT[args[0]].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        # As the group would run it: the same command path in usage lines and messages, -h as well as --help.
        command.main(args[1:], prog_name=f"{prog_name} {args[0]}", help_option_names=["-h", "--help"])
        return
    from chunkswarm.cli import cli

    cli(prog_name=prog_name)
