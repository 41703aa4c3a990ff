"""``chunkswarm swarm init | allow | show``: the swarm file of a private swarm, and the ``--swarm``/``--allow`` options.

A swarm file is secret (whoever holds it is a member), so it is written with
mode 0600 and refused when others may read it. Its format and the proof are
``common/swarm.py``'s; reading, writing and the permission check are here.
"""

from __future__ import annotations

import os
import pathlib
import stat
from collections.abc import Callable
from typing import Any

import click

from common.allow import AllowList, parse_ranges
from common.errors import ValidationError
from common.identity import parse_node_id
from common.swarm import SwarmFile, parse_swarm_file, web_token

__all__ = ["swarm", "load_swarm_file", "swarm_options", "SwarmFileType"]


def load_swarm_file(path: pathlib.Path) -> SwarmFile:
    """The swarm ``path`` holds; :class:`click.ClickException` naming the file for anything wrong."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise click.ClickException(
                f"swarm file {path} can be read by others (mode {stat.S_IMODE(mode):04o}): whoever reads it joins the swarm; "
                f"run: chmod 600 {path}"
            )
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot read swarm file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"swarm file {path} is not text: not a swarm file") from None
    try:
        return parse_swarm_file(text)
    except ValidationError as exc:
        raise click.ClickException(f"swarm file {path} is malformed: {exc}") from None


def _write(path: pathlib.Path, swarm_file: SwarmFile, *, create: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if create else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(swarm_file.serialize())
    except FileExistsError:
        raise click.ClickException(f"{path} exists: a swarm file is never overwritten (its secret would be lost)") from None
    except OSError as exc:
        raise click.ClickException(f"cannot write swarm file {path}: {exc.strerror or exc}") from None


class SwarmFileType(click.ParamType[SwarmFile]):
    """``--swarm FILE``: the file read and checked at once, so that a bad one is an error before anything starts."""

    name = "file"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> SwarmFile:
        if isinstance(value, SwarmFile):
            return value
        try:
            return load_swarm_file(pathlib.Path(value))
        except click.ClickException as exc:
            self.fail(exc.message, param, ctx)


def _allow(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> AllowList:
    try:
        return AllowList(parse_ranges(value))
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


SWARM_OPTION = click.option("--swarm", "swarm", type=SwarmFileType(), default=None,
                            help="A private swarm's file (chunkswarm swarm init): TLS and members only.")  # fmt: skip
ALLOW_OPTION = click.option("--allow", "allow", multiple=True, callback=_allow, metavar="CIDR",
                            help="Deal only with addresses in this range (repeatable; e.g. 192.168.1.0/24).")  # fmt: skip


def swarm_options(func: Callable[..., Any]) -> Callable[..., Any]:
    return SWARM_OPTION(ALLOW_OPTION(func))


@click.group("swarm", context_settings={"help_option_names": ["-h", "--help"]})
def swarm() -> None:
    """Create and edit a private swarm's file (its name, secret and allowed node ids)."""


@swarm.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@click.option("--name", default=None, help="The swarm's name  [default: the file's name without extension]")
def init(path: pathlib.Path, name: str | None) -> None:
    """Create the swarm file PATH (mode 0600) with a fresh random secret; give it to every member."""
    try:
        swarm_file = SwarmFile.create(name or path.stem)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    _write(path, swarm_file, create=True)
    click.echo(f"created swarm {swarm_file.name} in {path} (mode 0600): run the tracker and every peer with --swarm {path}")


@swarm.command("allow")
@click.argument("path", type=click.Path(dir_okay=False, path_type=pathlib.Path))
@click.argument("node_id")
def allow(path: pathlib.Path, node_id: str) -> None:
    """Add NODE_ID to the swarm's list: once it has one, only the nodes listed (holding the secret too) are members."""
    swarm_file = load_swarm_file(path)
    try:
        identifier = parse_node_id(node_id)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    _write(path, swarm_file.allow(identifier), create=False)
    click.echo(f"{path}: {len(swarm_file.allow(identifier).allowed)} node ids allowed")


@swarm.command("show")
@click.argument("path", type=click.Path(dir_okay=False, path_type=pathlib.Path))
def show(path: pathlib.Path) -> None:
    """Show the swarm's name and allowed node ids (never its secret)."""
    swarm_file = load_swarm_file(path)
    click.echo(swarm_file.describe())
    click.echo(f"web token: {web_token(swarm_file)}  (opens the tracker's web pages and /api/v1; it cannot join the swarm)")
