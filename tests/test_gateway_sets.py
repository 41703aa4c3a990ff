"""``/api/v1/sets`` on a peer's gateway (``seed --http``): real processes over 127.0.0.1, curl as the client.

A set (collection) published by one node and served by its seeder; a second node runs the gateway, which
fetches the files on demand. Reading: the set as JSON, a file with its proof, the proof alone, older
versions; ``collection fetch`` and ``collection verify`` check what came against the root kept, and refuse a
tampered file, a tampered proof and a lying gateway. Writing: the token, the owner rule, the caps, the
index and sequence checks, two POSTs at once, and a POSTed file fetched by a third node with ``get --collection``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import trio

from common.errors import IntegrityError
from common.set_proof import FileCheck, FileProof, decode_header
from tests.procs import ROOT, spawn, start_tracker
from tests.test_gateway_swarm import curl

pytestmark = pytest.mark.slow

BIG = 300_000
CAP = 100_000


def _cli(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chunkswarm", *args], check=False, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "250", "PYTHONPATH": str(ROOT)})  # fmt: skip


async def _run(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: _cli(*args, cwd=cwd))


async def _json(url: str, *options: str) -> tuple[int, dict[str, object]]:
    status, _, body, _ = await curl(url, *options)
    return status, json.loads(body)


async def _lying_gateway(nursery: trio.Nursery, head: bytes, body: bytes) -> int:
    """An HTTP server on a free port that answers every request with ``head`` (status line and headers) and ``body``."""

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(65536)
                if not data:
                    return
                request += data
            with contextlib.suppress(trio.BrokenResourceError):  # the client may stop reading: that is what is tested
                await stream.send_all(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, answer, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def test_sets_over_http_read_verify_and_write(tmp_path: pathlib.Path) -> None:
    src, empty = tmp_path / "src", tmp_path / "empty"
    (src / "sub").mkdir(parents=True)
    empty.mkdir()
    files = {"a.txt": b"hello\n", "big.bin": os.urandom(BIG), "gone.txt": b"soon deleted\n", "sub/c.txt": b"sea\n"}
    for path, data in files.items():
        (src / path).write_bytes(data)
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db") as (_, port):
            tracker = ["--tracker", f"127.0.0.1:{port}"]
            owner = [*tracker, "--state-dir", str(tmp_path / "owner")]
            first = await _run("publish", str(src), "--collection", "photos", "--no-serve", *owner, cwd=tmp_path)
            assert first.returncode == 0, first.stderr
            (src / "gone.txt").unlink()  # version 2 keeps it as a deletion
            second = await _run("publish", str(src), "--collection", "photos", "--no-serve", *owner, cwd=tmp_path)
            assert second.returncode == 0, second.stderr
            root1 = re.search(r"version 1 root ([0-9a-f]{64})", first.stdout).group(1)  # type: ignore[union-attr]
            root = re.search(r"version 2 root ([0-9a-f]{64})", second.stdout).group(1)  # type: ignore[union-attr]
            gw_state = tmp_path / "gw"
            async with spawn(nursery, "-m", "chunkswarm", "seed", str(src), "--no-watch", *owner, "--label", "owner", name="owner") as seeder, \
                       spawn(nursery, "-m", "chunkswarm", "seed", str(empty), "--no-watch", "--http", "127.0.0.1:0", "--http-max-upload",
                             str(CAP), *tracker, "--state-dir", str(gw_state), "--label", "gw", name="gw") as gw:  # fmt: skip
                with trio.fail_after(90):
                    await seeder.wait_for("seeding big.bin")
                    base = (await gw.wait_for(r"HTTP gateway on (http://127\.0\.0\.1:\d+)/files/")).group(1)
                    api = base + "/api/v1/sets/photos"
                    await _read(tmp_path, api, base, root, root1, files)
                    await _write(tmp_path, nursery, api, base, gw_state, owner, tracker)
        nursery.cancel_scope.cancel()


async def _read(tmp_path: pathlib.Path, api: str, base: str, root: str, root1: str, files: dict[str, bytes]) -> None:
    # The set: version 2, four entries in path order, the deletion marked (it keeps its index).
    status, shown = await _json(api)
    assert status == 200 and (shown["sequence"], shown["root"], shown["count"], shown["files"]) == (2, root, 4, 3)
    entries = shown["entries"]
    assert isinstance(entries, list) and [e["path"] for e in entries] == ["a.txt", "big.bin", "gone.txt", "sub/c.txt"]
    assert [e["deleted"] for e in entries] == [False, False, True, False] and entries[2]["file_id"] is None
    assert entries[1]["size"] == BIG and entries[0]["mode"] == (tmp_path / "src" / "a.txt").stat().st_mode & 0o7777
    assert len(shown["owners"]) == 1  # type: ignore[arg-type]
    status, older = await _json(api + "?sequence=1")
    assert status == 200 and older["root"] == root1 and older["count"] == 4 and older["files"] == 4
    status, older = await _json(api + f"?root={root1}")
    assert status == 200 and older["sequence"] == 1
    for url, expected, words in ((base + "/api/v1/sets/nothing", 404, "no set named 'nothing'"), (api + "?sequence=9", 404, "no version 9"),
                                 (api + "/files/7", 404, "no entry 7"), (api + "/files/2", 410, "'gone.txt', is a deletion"),
                                 (api + "/files/x1", 400, "whole number"), (api + "?root=abc", 400, "64 hexadecimal digits"),
                                 (api + f"?root={'0' * 64}", 404, "no a version with root")):  # fmt: skip
        status, body = await _json(url)
        assert (status, body["status"]) == (expected, expected) and words in str(body["error"]), (url, body)
    # A file and its proof: the bytes are the file's, the proof places it under the root kept.
    status, headers, body, _ = await curl(api + "/files/1")
    assert status == 200 and body == files["big.bin"] and headers["chunkswarm-root"] == root and headers["chunkswarm-index"] == "1"
    proof = decode_header(headers["chunkswarm-proof"])
    check = FileCheck(proof, bytes.fromhex(root))
    check.receive_data(body)
    assert check.finish().path == "big.bin" and headers["content-disposition"].startswith('attachment; filename="big.bin"')
    status, headers, body, _ = await curl(api + "/files/1", "-r", "1000-1999")
    assert status == 206 and body == files["big.bin"][1000:2000] and decode_header(headers["chunkswarm-proof"]) == proof
    status, headers, body, _ = await curl(api + "/files/0?sequence=1")
    assert status == 200 and body == b"hello\n" and headers["chunkswarm-root"] == root1
    with pytest.raises(IntegrityError, match="does not place"):  # version 1's proof is not about version 2
        FileCheck(decode_header(headers["chunkswarm-proof"]), bytes.fromhex(root))
    status, _, text, _ = await curl(api + "/files/3/proof")
    assert status == 200 and FileProof.from_json(text.decode()).entry.path == "sub/c.txt"
    # The commands: verify (a file and a proof fetched with curl), fetch (download and check).
    (tmp_path / "c.txt").write_bytes((await curl(api + "/files/3"))[2])
    (tmp_path / "c.proof").write_bytes(text)
    verify = ("collection", "verify", str(tmp_path / "c.txt"), "--root", root, "--proof", str(tmp_path / "c.proof"))
    checked = await _run(*verify, cwd=tmp_path)
    assert checked.returncode == 0 and "verified" in checked.stdout, checked.stderr
    (tmp_path / "c.txt").write_bytes(b"SEA\n")  # a tampered file
    refused = await _run(*verify, cwd=tmp_path)
    assert refused.returncode == 1 and "NOT VERIFIED" in refused.stderr and "content differs" in refused.stderr
    (tmp_path / "c.txt").write_bytes(b"sea\n")
    forged = json.loads(text)
    forged["proof"][0] = "00" * 32  # a tampered proof
    (tmp_path / "c.proof").write_text(json.dumps(forged))
    refused = await _run(*verify, cwd=tmp_path)
    assert refused.returncode == 1 and "does not place 'sub/c.txt'" in refused.stderr
    got = await _run("collection", "fetch", base, "photos", "sub/c.txt", "--root", root, "-o", str(tmp_path / "fetched.txt"), cwd=tmp_path)
    assert got.returncode == 0 and (tmp_path / "fetched.txt").read_bytes() == b"sea\n", got.stderr
    got = await _run("collection", "fetch", base, "photos", "1", "--root", root1, "-o", str(tmp_path / "b1"), "--proof-out",
                     str(tmp_path / "b1.proof"), cwd=tmp_path)  # fmt: skip
    assert got.returncode == 0 and (tmp_path / "b1").read_bytes() == files["big.bin"] and f"root {root1}" in got.stdout
    assert FileProof.from_json((tmp_path / "b1.proof").read_text()).sequence == 1
    wrong = await _run("collection", "fetch", base, "photos", "0", "--root", "ab" * 32, "-o", str(tmp_path / "no"), cwd=tmp_path)
    assert wrong.returncode == 1 and "NOT VERIFIED" in wrong.stderr and not (tmp_path / "no").exists()


async def _lies(tmp_path: pathlib.Path, nursery: trio.Nursery, api: str, root: str) -> None:
    """``collection fetch`` from a lying gateway: a byte of the file changed, or the proof's entry changed to fit other bytes."""
    status, headers, body, _ = await curl(api + "/files/1")
    assert status == 200
    proof_header = headers["chunkswarm-proof"]
    forged = json.loads(base64.b64decode(proof_header))
    forged["entry"]["size"] = 5
    for name, header, data, words in (
        ("flipped", proof_header, body[:-1] + bytes([body[-1] ^ 1]), "content differs"),
        ("short", proof_header, body[:-10], "content differs"),
        ("forged", base64.b64encode(json.dumps(forged).encode()).decode(), b"12345", "does not place"),
        ("none", None, body, "no Chunkswarm-Proof header"),
    ):
        head = b"HTTP/1.1 200 OK\r\n" + (f"Chunkswarm-Proof: {header}\r\n".encode() if header else b"")
        liar = await _lying_gateway(nursery, head, data)
        out = tmp_path / f"lie-{name}"
        got = await _run("collection", "fetch", f"http://127.0.0.1:{liar}", "photos", "1", "--root", root, "-o", str(out), cwd=tmp_path)
        assert got.returncode == 1 and "NOT VERIFIED" in got.stderr and words in got.stderr, (name, got.stderr)
        assert not out.exists() and not list(tmp_path.glob(f".lie-{name}*"))


async def _write(tmp_path: pathlib.Path, nursery: trio.Nursery, api: str, base: str, gw_state: pathlib.Path, owner: list[str],
                 tracker: list[str]) -> None:  # fmt: skip
    status, shown = await _json(api)
    await _lies(tmp_path, nursery, api, str(shown["root"]))
    printed = await _run("collection", "token", "--state-dir", str(gw_state), cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    token = printed.stdout.strip()
    auth = ["-H", f"Authorization: Bearer {token}"]
    (tmp_path / "new.txt").write_bytes(b"posted over HTTP\n")
    post = ["-X", "POST", "--data-binary", f"@{tmp_path / 'new.txt'}"]
    for options, expected, words in (
        ([], 401, "write token"),
        (["-H", "Authorization: Bearer " + "x" * len(token)], 401, "write token"),
        (auth, 403, "is not an owner of set 'photos'"),  # the gateway's node may not sign a version of it yet
    ):
        status, body = await _json(api + "/files?path=new/n.txt", *post, *options)
        assert (status, body["status"]) == (expected, expected) and words in str(body["error"]), body
    key = re.search(r"public key ([0-9a-f]{64})", (await _run("id", "--state-dir", str(gw_state), cwd=tmp_path)).stdout)
    assert key
    allowed = await _run("collection", "allow", "photos", key.group(1), *owner, cwd=tmp_path)
    assert allowed.returncode == 0 and "version 3" in allowed.stdout, allowed.stderr
    (tmp_path / "big").write_bytes(os.urandom(CAP + 1))
    for url, options, expected, words in (
        (api + "/files?path=../n.txt", post, 400, "'..' segment"),
        (api + "/files?path=/abs.txt", post, 400, "is absolute"),
        (api + "/files", post, 400, "?path=PATH"),
        (api + "/files/x?path=n.txt", post, 400, "whole number"),
        (api + "/files?path=big", ["-X", "POST", "--data-binary", f"@{tmp_path / 'big'}"], 413, f"at most {CAP}"),
        (api + "/files?path=big", ["-X", "POST", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{tmp_path / 'big'}"], 413,
         f"over the {CAP} bytes"),
        (api + "/files/0?path=new/n.txt", post, 409, "would be entry 3 of set 'photos' version 3, not 0"),
        (api + "/files?path=new/n.txt&sequence=2", post, 409, "is at version 3, not 2"),
    ):  # fmt: skip
        status, body = await _json(url, *options, *auth)
        assert (status, body["status"]) == (expected, expected) and words in str(body["error"]), (url, body)
        if expected == 409:
            assert body["sequence"] == 3
    assert not list((gw_state / "gateway-posts" / "incoming").iterdir())  # what was refused is not kept
    status, added = await _json(api + "/files/3?path=new/n.txt&sequence=3", *post, *auth)
    assert status == 201 and (added["index"], added["sequence"], added["created"]) == (3, 4, True), added
    status, headers, body, _ = await curl(api + "/files/3")
    assert status == 200 and body == b"posted over HTTP\n" and headers["chunkswarm-sequence"] == "4"
    assert (gw_state / "gateway-posts" / "sets" / "photos" / "new" / "n.txt").read_bytes() == b"posted over HTTP\n"
    # In place of a file: the same index, a new version; two POSTs at once: one after the other, neither refused.
    (tmp_path / "a2.txt").write_bytes(b"hello again\n")
    status, replaced = await _json(api + "/files/0?path=a.txt", "-X", "POST", "--data-binary", f"@{tmp_path / 'a2.txt'}", *auth)
    assert status == 200 and (replaced["index"], replaced["sequence"], replaced["created"]) == (0, 5, False), replaced
    results: list[tuple[int, dict[str, object]]] = []

    async def post_one(number: int) -> None:
        (tmp_path / f"x{number}").write_bytes(b"x%d\n" % number)
        results.append(await _json(api + f"/files?path=x/{number}.txt", "-X", "POST", "--data-binary", f"@{tmp_path / f'x{number}'}", *auth))

    async with trio.open_nursery() as posts:
        for number in range(3):
            posts.start_soon(post_one, number)
    assert sorted(status for status, _ in results) == [201] * 3, results
    assert sorted(int(str(body["sequence"])) for _, body in results) == [6, 7, 8]
    # Another node gets the whole set: the POSTed files come from the gateway's node, each checked against the root.
    out = tmp_path / "out"
    got = await _run("get", "--collection", "photos", "-o", str(out), *tracker, "--state-dir", str(tmp_path / "third"), cwd=tmp_path)
    assert got.returncode == 0 and "version 8" in got.stdout, got.stderr
    assert (out / "new" / "n.txt").read_bytes() == b"posted over HTTP\n" and (out / "a.txt").read_bytes() == b"hello again\n"
    assert sorted(p.name for p in (out / "x").iterdir()) == ["0.txt", "1.txt", "2.txt"] and not (out / "gone.txt").exists()


async def test_a_post_starts_a_set_and_its_files_are_served_after_a_restart(tmp_path: pathlib.Path) -> None:
    empty, gw_state = tmp_path / "empty", tmp_path / "gw"
    empty.mkdir()
    gateway = ("-m", "chunkswarm", "seed", str(empty), "--no-watch", "--http", "127.0.0.1:0", "--state-dir", str(gw_state), "--label", "gw")
    async with trio.open_nursery() as nursery:
        async with start_tracker(nursery, tmp_path / "t.db") as (_, port):
            tracker = ["--tracker", f"127.0.0.1:{port}"]
            with trio.fail_after(90):
                async with spawn(nursery, *gateway, *tracker, name="gw") as gw:
                    api = (await gw.wait_for(r"HTTP gateway on (http://127\.0\.0\.1:\d+)/files/")).group(1) + "/api/v1/sets/notes"
                    token = (await _run("collection", "token", "--state-dir", str(gw_state), cwd=tmp_path)).stdout.strip()
                    (tmp_path / "n.txt").write_bytes(b"a note\n")
                    status, added = await _json(api + "/files/0?path=n.txt&sequence=0", "-X", "POST", "--data-binary",
                                                f"@{tmp_path / 'n.txt'}", "-H", f"Authorization: Bearer {token}")  # fmt: skip
                    assert status == 201 and (added["sequence"], added["index"]) == (1, 0), added
                    status, shown = await _json(api)
                    key = re.search(r"public key ([0-9a-f]{64})", (await _run("id", "--state-dir", str(gw_state), cwd=tmp_path)).stdout)
                    assert status == 200 and key and [o["public_key"] for o in shown["owners"]] == [key.group(1)]  # type: ignore[union-attr]
                    gw.signal(2)
                    await gw.wait_exit()
                async with spawn(nursery, *gateway, *tracker, name="gw again") as gw:
                    await gw.wait_for(r"HTTP gateway on")
                    await gw.wait_for(r"connected to the tracker")
                    out = tmp_path / "out"
                    got = await _run("get", "--collection", "notes", "-o", str(out), *tracker, "--state-dir", str(tmp_path / "g"), cwd=tmp_path)
                    assert got.returncode == 0 and (out / "n.txt").read_bytes() == b"a note\n", got.stderr
        nursery.cancel_scope.cancel()
