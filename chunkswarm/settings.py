"""The configuration file: one TOML file of defaults for every command, and where each setting came from.

::

    # ~/.config/chunkswarm/config.toml (the platform's config folder; --config or CHUNKSWARM_CONFIG for another)
    [peer]                       # every peer command: seed, get, ls, stats
    tracker = "tracker.lan:7070"
    [tracker]
    host = "0.0.0.0"
    db = "/var/lib/chunkswarm/tracker.db"
    [seed]
    host = "0.0.0.0"
    max-upload-connections = 64

A section is a command's name (or ``peer`` for what the peer commands share);
a key is one of its options, written as on the command line without the
dashes (``max-upload-connections`` or ``max_upload_connections``). Values go
through the option's own type, so they are checked as a flag's would be. What
is given on the command line wins, then the environment (``CHUNKSWARM_TRACKER``),
then this file, then the built-in default. An unknown section or key is an
error, not a silently ignored line.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from typing import Any, Final

import attrs
import click
import platformdirs

__all__ = ["Settings", "default_config_path", "load_settings", "PEER_SECTION", "CONFIG_ENVVAR"]

#: The section whose keys apply to every peer command that has the option.
PEER_SECTION: Final = "peer"
CONFIG_ENVVAR: Final = "CHUNKSWARM_CONFIG"


def default_config_path() -> pathlib.Path:
    return platformdirs.user_config_path("chunkswarm", appauthor=False) / "config.toml"


@attrs.frozen
class Settings:
    """A configuration file as click's ``default_map``, with what each value's source is."""

    path: pathlib.Path
    #: command name -> parameter name -> value, for click's ``default_map``.
    default_map: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: (command name, parameter name) -> the section it was read from.
    sections: Mapping[tuple[str, str], str] = attrs.field(factory=dict)

    def source(self, command: click.Command, param: click.Parameter) -> str:
        """Where the effective value of ``param`` comes from, when the command line gives none."""
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str) and os.environ.get(envvar):
            return f"environment {envvar}"
        section = self.sections.get((command.name or "", param.name or ""))
        if section is not None:
            return f"{self.path} [{section}]"
        return "default"


def load_settings(path: pathlib.Path, commands: Mapping[str, click.Command], *, required: bool) -> Settings:
    """The settings in the TOML file at ``path`` for ``commands``; none when it does not exist and is not ``required``.

    Raises :class:`click.ClickException` naming the file for anything wrong in it.
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise click.ClickException(f"no configuration file at {path}") from None
        return Settings(path)
    except OSError as exc:
        raise click.ClickException(f"cannot read the configuration file {path}: {exc.strerror or exc}") from None
    import tomllib  # here: most runs have no file to parse

    try:
        document = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{path} is not valid TOML: {exc}") from None
    # Names only: a command is imported (commands are loaded lazily) only when a section sets it.
    peer_commands = [name for name in commands if name != "tracker" and name != "config"]
    default_map: dict[str, dict[str, Any]] = {}
    sections: dict[tuple[str, str], str] = {}
    # The shared section first, so a command's own section overrides it.
    order = sorted(document, key=lambda section: section != PEER_SECTION)
    for section in order:
        table = document[section]
        if section == PEER_SECTION:
            targets = peer_commands
        elif section in commands and section != "config":
            targets = [section]
        else:
            known = ", ".join(sorted([PEER_SECTION, *(name for name in commands if name != "config")]))
            raise click.ClickException(f"{path}: unknown section [{section}] (sections: {known})")
        if not isinstance(table, dict):
            raise click.ClickException(f"{path}: [{section}] must be a table of settings")
        for key, value in table.items():
            name = key.replace("-", "_")
            used = False
            for target in targets:
                param = _option(commands[target], name)
                if param is not None and param.name is not None:
                    default_map.setdefault(target, {})[param.name] = _checked(path, section, key, param, value)
                    sections[(target, param.name)] = section
                    used = True
            if not used:
                raise click.ClickException(f"{path}: [{section}] has no setting {key!r}")
    return Settings(path, default_map, sections)


def _option(command: click.Command, name: str) -> click.Option | None:
    """The option of ``command`` spelled ``name`` (as on the command line, or as its parameter is called)."""
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden or not param.expose_value:
            continue
        spellings = {param.name, *(opt.lstrip("-").replace("-", "_") for opt in param.opts if opt.startswith("--"))}
        if name in spellings:
            return param
    return None


def _checked(path: pathlib.Path, section: str, key: str, param: click.Option, value: object) -> object:
    """``value`` as the option would take it, or a :class:`click.ClickException` that says where it is wrong."""
    if isinstance(value, (dict, list)) and not param.multiple:
        raise click.ClickException(f"{path}: [{section}] {key} must be a single value")
    if param.multiple and isinstance(value, str):  # one value of an option that may be given several times
        value = [value]
    try:
        param.type_cast_value(click.Context(click.Command("config")), value)
    except click.BadParameter as exc:
        raise click.ClickException(f"{path}: [{section}] {key}: {exc.message}") from None
    # Handed to click as text where the option takes text, so its own parsing (callbacks included) applies.
    return value if isinstance(value, (bool, int, float)) or param.multiple else str(value)
