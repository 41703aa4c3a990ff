"""HOST:PORT parsing and formatting, IPv4 and IPv6."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.address import format_address, parse_address
from common.errors import ValidationError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7000", ("127.0.0.1", 7000)),
        ("  10.0.0.2:1  ", ("10.0.0.2", 1)),
        ("tracker.example:65535", ("tracker.example", 65535)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:7000", ("::1", 7000)),
        ("[2001:db8::8a2e:370:7334]:443", ("2001:db8::8a2e:370:7334", 443)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
        ("[::ffff:192.0.2.1]:80", ("::ffff:192.0.2.1", 80)),
    ],
)
def test_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected
    assert parse_address(text, default_port=1) == expected  # an explicit port wins


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1", ("127.0.0.1", 9)), ("host", ("host", 9)), ("::1", ("::1", 9)), ("[::1]", ("::1", 9))],
)
def test_default_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text, default_port=9) == expected
    with pytest.raises(ValidationError, match="PORT"):
        parse_address(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        ":80",
        "[]:80",
        "host:",
        "host:http",
        "host:-1",
        "host:+80",
        "host:65536",
        "host:8 0",
        "host:²",
        "host:٨٠",
        "[::1",
        "[::1]80",
        "[::1]:",
        "[::1]:x",
    ],
)
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_address(text, default_port=9)


ports = st.integers(0, 65535)


@given(st.ip_addresses(), ports)
def test_format_then_parse(address: object, port: int) -> None:
    host = str(address)
    text = format_address(host, port)
    assert text.startswith("[") == (":" in host)
    assert parse_address(text) == (host, port)


def test_format() -> None:
    assert format_address("127.0.0.1", 80) == "127.0.0.1:80"
    assert format_address("::1", 80) == "[::1]:80"


def test_colons_without_brackets_must_be_ipv6() -> None:
    with pytest.raises(ValidationError):
        parse_address("1.2.3.4:80:90", default_port=1)
