"""The ``chunkswarm`` command: a click group whose subcommands build config objects and run trio.

Lives outside ``common/`` because it imports both ``tracker`` and ``peer``;
each of those owns its subcommands and this module only gathers them. The
group reads the configuration file (``chunkswarm/settings.py``) into click's
``default_map``, so every option of every command can be set there.
"""

from __future__ import annotations

import os
import pathlib

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from chunkswarm import __version__
from chunkswarm.get_command import get
from chunkswarm.peer_commands import peer_commands
from chunkswarm.settings import CONFIG_ENVVAR, Settings, default_config_path, load_settings
from chunkswarm.tracker_command import tracker_command
from common.address import TRACKER_PORT
from peer.config import default_state_dir

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, help=f"""Share files as verified chunks: run a tracker, seed files, get them from the swarm.

    \b
    A tracker address without a port means port {TRACKER_PORT}.
    Peers (seed, get) keep their state in {default_state_dir()} (--state-dir picks another folder).""")
@click.version_option(__version__, prog_name="chunkswarm")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=pathlib.Path), envvar=CONFIG_ENVVAR, show_envvar=True,
              help=f"Configuration file (TOML) of default options [default: {default_config_path()}].")  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, config_path: pathlib.Path | None) -> None:
    assert isinstance(ctx.command, click.Group)
    settings = load_settings(config_path or default_config_path(), ctx.command.commands, required=config_path is not None)
    ctx.obj = settings
    ctx.default_map = {name: dict(values) for name, values in settings.default_map.items()}


@click.command("config")
@click.argument("command", required=False)
@click.pass_context
def config_command(ctx: click.Context, command: str | None) -> None:
    """Show the effective settings of COMMAND (or of every command) and where each comes from."""
    settings: Settings = ctx.find_object(Settings)  # type: ignore[assignment]  # set by the group
    group = ctx.parent.command if ctx.parent is not None else None
    assert isinstance(group, click.Group)
    names = [command] if command else [name for name in group.commands if name != "config"]
    console = Console()
    if not console.is_terminal:  # a pipe or a file: whole paths rather than rich's 80 columns
        console.width = max(console.width, 200)
    console.print(Text(f"configuration file: {settings.path}{'' if settings.path.exists() else ' (none there)'}"))
    for name in names:
        sub = group.commands.get(name)
        if sub is None:
            raise click.ClickException(f"no command {name!r} (commands: {', '.join(sorted(group.commands))})")
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
    if param.name in configured:
        return str(configured[param.name])
    default = param.get_default(click.Context(command), call=True)
    return "" if default is None else str(default)


cli.add_command(tracker_command)
cli.add_command(get)
for _command in peer_commands:
    cli.add_command(_command)
cli.add_command(config_command)


def main() -> None:
    cli()
