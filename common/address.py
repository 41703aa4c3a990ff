"""Parsing and formatting ``HOST:PORT`` addresses, IPv4 and IPv6 alike."""

from __future__ import annotations

import ipaddress

from common.errors import ValidationError

__all__ = ["parse_address", "format_address", "ip_group", "TRACKER_PORT"]

#: The port a tracker listens on unless told otherwise, and so the one an address without a port means.
TRACKER_PORT = 7070


def parse_address(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``"v6"`` or ``"host"`` (with ``default_port``) -> ``(host, port)``."""
    text = text.strip()
    if not text:
        raise ValidationError("empty address")
    host: str
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValidationError(f"address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValidationError(f"address {text!r}: expected ':PORT' after ']'")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        # No colon (a host name or IPv4), or a bare IPv6 address without brackets.
        host, port_text = text, None
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValidationError(f"address {text!r}: write IPv6 addresses as [ADDRESS]:PORT") from None
    if not host:
        raise ValidationError(f"address {text!r}: missing host")
    if port_text is None:
        if default_port is None:
            raise ValidationError(f"address {text!r}: missing ':PORT'")
        return host, default_port
    # isascii: str.isdigit also accepts digits int() refuses ("²") or reads oddly ("٨٠").
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        raise ValidationError(f"address {text!r}: port must be a number 0..65535")
    return host, int(port_text)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ip_group(host: str) -> str:
    """What a per-IP cap counts ``host`` under: the address itself for IPv4 (and names), its /64 for IPv6.

    One IPv6 host is usually given a whole /64, so counting single IPv6
    addresses would give it 2**64 of them; an IPv4-mapped address counts as its IPv4 one.
    """
    if ":" not in host:  # IPv4 (or a name): itself, without parsing (the tracker asks per connection)
        return host
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
