"""``--http HOST:PORT``, ``--http-dir DIR`` and ``--http-max-upload``: the HTTP gateway options of every command that runs a
long-lived peer (``seed``, ``demo_peer.py``), and the gateway's write token, kept in the node's state folder."""

from __future__ import annotations

import pathlib
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from chunkswarm.node_key import write_private_once
from common.address import parse_address
from common.errors import ValidationError

if TYPE_CHECKING:  # peer.gateway loads hypercorn and starlette: only when --http is given
    from peer.gateway import GatewayConfig

__all__ = ["http_options", "gateway_config", "load_or_create_token", "TOKEN_FILE", "POSTS_DIR"]

#: The gateway's port when ``--http`` names a host only.
HTTP_PORT = 8080
#: The gateway's write token, in the node's state folder (mode 0600): ``chunkswarm collection token`` prints it.
TOKEN_FILE = "gateway.token"
#: Where the gateway keeps the files POSTed into sets, in the node's state folder.
POSTS_DIR = "gateway-posts"
#: ``--http-max-upload`` when not given: 1 GiB.
MAX_UPLOAD = 1024**3


def _parse_http(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    try:
        return parse_address(value, default_port=HTTP_PORT)
    except ValidationError as exc:
        raise click.BadParameter(str(exc)) from None


def http_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Adds ``http`` (an address or None), ``http_dir`` (a folder or None) and ``http_max_upload`` to a command's parameters."""
    func = click.option("--http-max-upload", type=click.IntRange(min=0), default=MAX_UPLOAD, metavar="BYTES", show_default=True,
                        help="The largest file the gateway takes in a POST to /api/v1/sets (413 past it).")(func)  # fmt: skip
    func = click.option("--http-dir", type=click.Path(file_okay=False, path_type=pathlib.Path), default=None,
                        help="Where the gateway keeps files it fetches from the swarm  [default: gateway/ in the state folder]")(func)  # fmt: skip
    return click.option("--http", metavar="HOST:PORT", default=None, callback=_parse_http,
                        help=f"Also serve files over HTTP at HOST:PORT (port {HTTP_PORT} if left out, 0: any free port): "
                             "GET /files/NAME streams a file held here, or fetches it from the swarm.")(func)  # fmt: skip


def gateway_config(http: tuple[str, int] | None, http_dir: pathlib.Path | None, state_dir: pathlib.Path,
                   max_upload: int = MAX_UPLOAD) -> GatewayConfig | None:  # fmt: skip
    """The gateway's settings from the options; None without ``--http``. POSTs need the token in the state folder (made now if none)."""
    if http is None:
        return None
    from peer.gateway import GatewayConfig, SetWrites

    writes = SetWrites(load_or_create_token(state_dir), state_dir / POSTS_DIR, max_upload)
    return GatewayConfig(folder=http_dir if http_dir is not None else state_dir / "gateway", host=http[0], port=http[1], writes=writes)


def load_or_create_token(state_dir: pathlib.Path) -> str:
    """The gateway's write token in ``state_dir``, made (256 random bits, mode 0600, atomically) if there is none."""
    from peer.gateway.set_upload import MIN_TOKEN

    path = state_dir / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        raise click.ClickException(f"cannot read the gateway's write token {path}: {exc.strerror or exc}") from None
    if not token:
        token = secrets.token_urlsafe(32)
        if not write_private_once(path, token.encode() + b"\n", "the gateway's write token"):
            token = path.read_text().strip()  # another process has just made it
    if len(token) < MIN_TOKEN or not token.isascii() or not token.isprintable() or " " in token:
        raise click.ClickException(f"{path} holds no usable write token (at least {MIN_TOKEN} printable ASCII characters): "
                                   "remove it and a new one is made")  # fmt: skip
    return token
