"""``chunkswarm seed --http``: the peer's HTTP gateway as a user runs it, real processes over 127.0.0.1, curl as the client.

Held files (GET, HEAD, Range, ETag, If-None-Match), names as ``get`` resolves them (unknown, ambiguous),
bad input, and a file fetched from the swarm on demand by a gateway that did not hold it. The header
rules themselves (Range, If-None-Match, Content-Disposition) are checked without sockets at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib

import pytest
import trio

from common.manifest import build_manifest, chunk_size_for
from peer.gateway.headers import BadHeader, RangeNotSatisfiable, disposition, not_modified, parse_range
from tests.procs import peer_args, spawn, start_tracker
from tests.test_gateway_swarm import curl

SIZE = 3 * 1024 * 1024 + 4321


def _write(path: pathlib.Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


async def _gateway_url(seeder: object) -> str:
    found = await seeder.wait_for(r"HTTP gateway on (http://127\.0\.0\.1:\d+)/files/")  # type: ignore[attr-defined]
    return str(found.group(1))


@pytest.mark.slow
async def test_held_files_over_http(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "share" / "movie one.bin", os.urandom(SIZE))
    _write(tmp_path / "share" / "a" / "twin.txt", b"one")  # two files named twin.txt: the name is ambiguous
    _write(tmp_path / "share" / "b" / "twin.txt", b"two")
    manifest = build_manifest(tmp_path / "share" / "movie one.bin", chunk_size_for(SIZE))
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db") as (_, port), \
                   spawn(nursery, "-m", "chunkswarm", "seed", str(tmp_path / "share"), "--http", "127.0.0.1:0", "--no-watch",
                         *peer_args(port, tmp_path / "s", "seeder"), name="seeder") as seeder:  # fmt: skip
            with trio.fail_after(60):
                base = await _gateway_url(seeder) + "/files/"
                await seeder.wait_for("seeding twin.txt")
                await seeder.wait_for(r"seeding movie one\.bin")
                etag = f'"{manifest.hex_id}"'
                for query in ("movie%20one.bin", manifest.hex_id, manifest.hex_id[:12]):
                    status, headers, body, code = await curl(base + query)
                    assert (status, code) == (200, 0) and hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
                    assert headers["content-length"] == str(SIZE) and headers["etag"] == etag and headers["accept-ranges"] == "bytes"
                    assert headers["content-type"] == "application/octet-stream"
                    assert headers["content-disposition"] == "attachment; filename=\"movie one.bin\"; filename*=UTF-8''movie%20one.bin"
                status, headers, body, _ = await curl(base + manifest.hex_id, "-I")
                assert (status, headers["content-length"], headers["etag"]) == (200, str(SIZE), etag)
                assert body.endswith(b"\r\n\r\n") and len(body) < 1000  # curl -I writes the headers there: no byte of the file
                edge = manifest.chunk_size
                for spec, start, stop in (("0-99", 0, 100), (f"{edge - 10}-{edge + 9}", edge - 10, edge + 10), ("-1000", SIZE - 1000, SIZE),
                                          (f"{SIZE - 5}-{SIZE + 100}", SIZE - 5, SIZE)):  # fmt: skip
                    status, headers, body, _ = await curl(base + manifest.hex_id, "-r", spec)
                    assert status == 206 and body == data[start:stop], spec
                    assert headers["content-range"] == f"bytes {start}-{stop - 1}/{SIZE}" and headers["content-length"] == str(stop - start)
                status, headers, body, _ = await curl(base + manifest.hex_id, "-r", f"{SIZE}-")
                assert status == 416 and headers["content-range"] == f"bytes */{SIZE}" and "outside" in json.loads(body)["error"]
                status, headers, body, _ = await curl(base + manifest.hex_id, "-H", f"If-None-Match: {etag}")
                assert (status, body, headers["etag"]) == (304, b"", etag)
                status, _, body, _ = await curl(base + manifest.hex_id, "-H", 'If-None-Match: "other"')
                assert status == 200 and len(body) == SIZE
                status, _, body, _ = await curl(base + manifest.hex_id, "-H", 'If-Range: "other"', "-r", "0-9")  # changed: the whole file
                assert status == 200 and len(body) == SIZE
                status, _, body, _ = await curl(base + "twin.txt")
                assert status == 409 and "twin.txt" in json.loads(body)["error"]
                status, _, body, _ = await curl(base + "nothing-here.bin")
                assert status == 404 and "no file named 'nothing-here.bin'" in json.loads(body)["error"]
                # Bad input: a 4xx and a JSON reason each, and the gateway serves on.
                for options, expected in ((["-r", "5-2"], 400), (["-H", "Range: bytes=abc"], 400), (["-H", "X-Big: " + "x" * 20000], 431),
                                          (["-X", "POST"], 405), (["-r", "0-1,5-6"], 200)):  # fmt: skip
                    status, _, body, _ = await curl(base + "movie%20one.bin", *options)
                    assert status == expected, (options, status, body[:200])
                    if status >= 400:
                        assert json.loads(body)["status"] == expected
                status, _, body, _ = await curl(base + "bad%01name")
                assert status == 400 and "control characters" in json.loads(body)["error"]
                status, _, body, _ = await curl(base[: -len("files/")] + "nowhere")
                assert status == 404 and json.loads(body)["status"] == 404
                status, _, body, _ = await curl(base.rstrip("/"))
                listing = json.loads(body)["files"]
                assert status == 200 and {f["name"] for f in listing} == {"movie one.bin", "twin.txt"} and all(f["complete"] for f in listing)
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_file_fetched_on_demand_then_held(tmp_path: pathlib.Path) -> None:
    data = _write(tmp_path / "share" / "wanted.bin", os.urandom(SIZE))
    (tmp_path / "empty").mkdir()
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db") as (_, port), \
                   spawn(nursery, "-m", "chunkswarm", "seed", str(tmp_path / "share"), *peer_args(port, tmp_path / "s", "seeder"),
                         name="seeder") as seeder, \
                   spawn(nursery, "-m", "chunkswarm", "seed", str(tmp_path / "empty"), "--http", "127.0.0.1:0", "--http-dir",
                         str(tmp_path / "fetched"), *peer_args(port, tmp_path / "g", "gateway"), name="gateway") as gateway:  # fmt: skip
            with trio.fail_after(60):
                base = await _gateway_url(gateway) + "/files/"
                await seeder.wait_for("seeding wanted.bin")
                status, headers, body, code = await curl(base + "wanted.bin")
                assert (status, code, headers["content-length"]) == (200, 0, str(SIZE)) and body == data
                await gateway.wait_for("fetched wanted.bin for the gateway")
                assert (tmp_path / "fetched" / "wanted.bin").read_bytes() == data  # kept
                seeder.kill()  # now only the gateway's peer holds it: it serves it from disk
                status, _, body, _ = await curl(base + "wanted.bin", "-r", "1000-1999")
                assert status == 206 and body == data[1000:2000]
        nursery.cancel_scope.cancel()


# -- the header rules, without sockets ------------------------------------------------
@pytest.mark.parametrize(
    ("header", "span"),
    [
        (None, None),
        ("bytes=0-0", (0, 1)),
        ("bytes=0-", (0, 100)),
        ("bytes= 10 - 19", (10, 20)),
        ("bytes=90-500", (90, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=-500", (0, 100)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("items=0-1", None),  # another unit: the whole file
    ],
)
def test_range_spans(header: str | None, span: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == span


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=100-200", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-5", 0)


@pytest.mark.parametrize("header", ["bytes", "bytes=", "bytes=-", "bytes=5-2", "bytes=a-b", "bytes=1-2-3", "bytes=" + "9" * 30 + "-",
                                    "bytes=" + "0-1," * 400])  # fmt: skip
def test_malformed_ranges(header: str) -> None:
    with pytest.raises(BadHeader):
        parse_range(header, 100)


def test_if_none_match_and_the_name_given() -> None:
    assert not_modified('"abc"', '"abc"') and not_modified('W/"abc"', '"abc"') and not_modified('"x", "abc"', '"abc"')
    assert not_modified("*", '"abc"') and not not_modified('"abcd"', '"abc"') and not not_modified(None, '"abc"')
    assert disposition('a"b\\c;%.txt') == "attachment; filename=\"a_b_c__.txt\"; filename*=UTF-8''a%22b%5Cc%3B%25.txt"
    assert disposition("é\r\n.txt") == "attachment; filename=\"___.txt\"; filename*=UTF-8''%C3%A9%0D%0A.txt"
