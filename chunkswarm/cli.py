"""The ``chunkswarm`` command: a click group whose subcommands build config objects and run trio.

Each subcommand lives in a module of its own, imported only when it is run
(or listed, or its settings are read): ``chunkswarm tracker`` never loads the
peer engine, nor ``get`` the tracker. The group reads the configuration file
(``chunkswarm/settings.py``) into click's ``default_map``, so every option of
every command can be set there.
"""

from __future__ import annotations

import importlib
import os
import pathlib
from collections.abc import Iterator, Mapping

import click

from chunkswarm import __version__
from chunkswarm.settings import CONFIG_ENVVAR, Settings, default_config_path, load_settings
from common.address import TRACKER_PORT
from peer.config import default_state_dir

__all__ = ["cli", "main"]

#: Each subcommand, as ``module:attribute``, in the order ``--help`` lists them.
SUBCOMMANDS: dict[str, str] = {
    "tracker": "chunkswarm.tracker_command:tracker_command",
    "seed": "chunkswarm.peer_commands:seed",
    "get": "chunkswarm.get_command:get",
    "ls": "chunkswarm.peer_commands:ls",
    "stats": "chunkswarm.peer_commands:stats",
    "unpublish": "chunkswarm.node_commands:unpublish",
    "id": "chunkswarm.node_commands:node_id",
    "swarm": "chunkswarm.swarm_command:swarm",
    "publish": "chunkswarm.collection_commands:publish",
    "collection": "chunkswarm.collection_commands:collection",
    "sync": "chunkswarm.sync_command:sync",
}


def _load(target: str) -> click.Command:
    module, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command)
    return command


class _Subcommands(Mapping[str, click.Command]):
    """The group's commands by name, each imported on first use (``config`` is here already)."""

    def __init__(self, group: click.Group) -> None:
        self._group = group

    def __getitem__(self, name: str) -> click.Command:
        command = self._group.commands.get(name)
        if command is None:
            if name not in SUBCOMMANDS:
                raise KeyError(name)
            command = _load(SUBCOMMANDS[name])
            self._group.add_command(command, name)
        return command

    def __iter__(self) -> Iterator[str]:
        return iter([*SUBCOMMANDS, *(name for name in self._group.commands if name not in SUBCOMMANDS)])

    def __len__(self) -> int:
        return len(list(iter(self)))


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_Subcommands(self))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return _Subcommands(self).get(cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, help=f"""Share files as verified chunks: run a tracker, seed files, get them from the swarm.

    \b
    A tracker address without a port means port {TRACKER_PORT}.
    Peers (seed, get) keep their state in {default_state_dir()} (--state-dir picks another folder).""")
@click.version_option(__version__, prog_name="chunkswarm")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=pathlib.Path), envvar=CONFIG_ENVVAR, show_envvar=True,
              help=f"Configuration file (TOML) of default options [default: {default_config_path()}].")  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, config_path: pathlib.Path | None) -> None:
    assert isinstance(ctx.command, click.Group)
    settings = load_settings(config_path or default_config_path(), _Subcommands(ctx.command), required=config_path is not None)
    ctx.obj = settings
    ctx.default_map = {name: dict(values) for name, values in settings.default_map.items()}


@click.command("config")
@click.argument("command", required=False)
@click.pass_context
def config_command(ctx: click.Context, command: str | None) -> None:
    """Show the effective settings of COMMAND (or of every command) and where each comes from."""
    from rich.console import Console  # here: only this command prints through rich
    from rich.table import Table
    from rich.text import Text

    settings: Settings = ctx.find_object(Settings)  # type: ignore[assignment]  # set by the group
    group = ctx.parent.command if ctx.parent is not None else None
    assert isinstance(group, click.Group)
    names = [command] if command else [name for name in group.list_commands(ctx) if name != "config"]
    console = Console()
    if not console.is_terminal:  # a pipe or a file: whole paths rather than rich's 80 columns
        console.width = max(console.width, 200)
    console.print(Text(f"configuration file: {settings.path}{'' if settings.path.exists() else ' (none there)'}"))
    for name in names:
        sub = group.get_command(ctx, name)
        if sub is None:
            raise click.ClickException(f"no command {name!r} (commands: {', '.join(group.list_commands(ctx))})")
        table = Table(title=f"chunkswarm {name}", title_justify="left")
        for column in ("option", "value", "from"):
            table.add_column(column)
        for param in sub.params:
            if not isinstance(param, click.Option) or param.hidden or param.name in (None, "help"):
                continue
            # Text, not markup: "[seed]" and values from a file are shown as they are.
            cells = (_spelling(param), _effective(settings, sub, param), settings.source(sub, param))
            table.add_row(*(Text(cell) for cell in cells))
        console.print(table)


def _spelling(param: click.Option) -> str:
    """The option as typed on the command line (``--db``, not its parameter's name ``db_path``)."""
    longs = [opt for opt in param.opts if opt.startswith("--")]
    return longs[0] if longs else param.opts[0]


def _effective(settings: Settings, command: click.Command, param: click.Option) -> str:
    """The value ``param`` takes when the command line does not give it, as text."""
    envvar = param.envvar if isinstance(param.envvar, str) else None
    if envvar is not None and os.environ.get(envvar):
        return os.environ[envvar]
    configured = settings.default_map.get(command.name or "", {})
    value = configured[param.name] if param.name in configured else param.get_default(click.Context(command), call=True)
    if isinstance(value, (list, tuple)):  # an option given several times (--tracker A --tracker B)
        return ", ".join(map(str, value))
    return "" if value is None else str(value)


cli.add_command(config_command)


def main() -> None:
    cli()
