"""``--http HOST:PORT`` and ``--http-dir DIR``: the HTTP gateway options of every command that runs a long-lived peer (``seed``, ``demo_peer.py``)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from common.address import parse_address
from common.errors import ValidationError

if TYPE_CHECKING:  # peer.gateway loads hypercorn and starlette: only when --http is given
    from peer.gateway import GatewayConfig

__all__ = ["http_options", "gateway_config"]

#: The gateway's port when ``--http`` names a host only.
HTTP_PORT = 8080


def _parse_http(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        return parse_address(value, default_port=HTTP_PORT)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


def http_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds ``http`` (an address or None) and ``http_dir`` (a folder or None) to a command's parameters."""
    func = click.option("--http-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=None,
                        help="Where the gateway keeps files it fetches from the swarm  [default: gateway/ in the state folder]")(func)  # fmt: skip
    return click.option("--http", metavar="HOST:PORT", default=None, callback=_parse_http,
                        help=f"Also serve files over HTTP at HOST:PORT (port {HTTP_PORT} if left out, 0: any free port): "
                             "GET /files/NAME streams a file held here, or fetches it from the swarm.")(func)  # fmt: skip


def gateway_config(http: tuple[str, int] | None, http_dir: pathlib.Path | None, state_dir: pathlib.Path) -> GatewayConfig | None:
    """The gateway's settings from the options; None without ``--http``."""
    if http is None:
        return None
    from peer.gateway import GatewayConfig

    return GatewayConfig(folder=http_dir if http_dir is not None else state_dir / "gateway", host=http[0], port=http[1])
