"""The tracker's web UI and JSON API over real HTTP on loopback, against a real tracker fed over the real protocol."""

from __future__ import annotations

import logging
import socket

import httpx
import pytest
import trio

from common.messages import ListFiles, Lookup, Stats
from common.swarm import SwarmFile, web_token
from tests.tracker_client_helper import make_manifest, open_client
from tests.web_helpers import join_peer, seed
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker
from tracker.web.queries import MAX_QUERY

TIMEOUT = 20


async def start(nursery: trio.Nursery, **options: object) -> RunningTracker:
    config = TrackerConfig(port=0, http_host="127.0.0.1", **options)  # type: ignore[arg-type]
    running: RunningTracker = await nursery.start(serve_tracker, config)
    return running


@pytest.fixture
async def tracker(nursery: trio.Nursery) -> RunningTracker:
    return await start(nursery)


def client(running: RunningTracker, **options: object) -> httpx.AsyncClient:
    assert running.http_url is not None
    return httpx.AsyncClient(base_url=running.http_url, timeout=TIMEOUT, **options)  # type: ignore[arg-type]


async def test_a_search_finds_files_by_any_case_and_by_id_prefix_with_their_holders(tracker: RunningTracker) -> None:
    song = make_manifest("Holiday Song.ogg", chunks=6)
    other = make_manifest("notes.txt", chunks=2)
    with trio.fail_after(TIMEOUT):
        seeder = await seed(tracker, song, 7001)
        half = await seed(tracker, other, 7002)
        await seed(tracker, song, 7003, chunks=[(0, 3)])
        async with client(tracker) as http:
            found = (await http.get("/api/v1/files", params={"q": "holiday SONG"})).json()
            by_id = (await http.get("/api/v1/files", params={"q": song.hex_id[:6]})).json()
            everything = (await http.get("/api/v1/files")).json()
    assert [f["id"] for f in by_id["files"]] == [song.hex_id]
    assert found["total"] == 1
    [result] = found["files"]
    assert (result["name"], result["size"], result["chunks"], result["holders"], result["complete_copies"]) == ("Holiday Song.ogg", song.size, 6, 2, 1)
    assert result["get_command"] == f"chunkswarm get --tracker 127.0.0.1:{tracker.port} {song.hex_id}"
    holders = {h["address"]: (h["chunks_held"], h["complete"], h["online"]) for h in result["peers"]}
    assert holders == {"127.0.0.1:7001": (6, True, True), "127.0.0.1:7003": (3, False, True)}
    assert everything["total"] == 2 and [f["name"] for f in everything["files"]] == ["notes.txt", "Holiday Song.ogg"]  # newest first
    await seeder.aclose()
    await half.aclose()


async def test_search_pages_through_the_matches(tracker: RunningTracker) -> None:
    with trio.fail_after(TIMEOUT):
        for i in range(5):
            await seed(tracker, make_manifest(f"part-{i}.bin", chunks=1), 7000 + i)
        async with client(tracker) as http:
            first = (await http.get("/api/v1/files", params={"q": "PART", "limit": 2})).json()
            last = (await http.get("/api/v1/files", params={"q": "part", "limit": 2, "offset": 4})).json()
            html = (await http.get("/", params={"q": "part", "limit": 2, "offset": 2})).text
    assert first["total"] == last["total"] == 5
    assert [f["name"] for f in first["files"]] == ["part-4.bin", "part-3.bin"]
    assert [f["name"] for f in last["files"]] == ["part-0.bin"]
    assert "part-2.bin" in html and "part-1.bin" in html and "part-4.bin" not in html
    assert "offset=4" in html and "offset=0" in html  # older and newer links


@pytest.mark.parametrize(
    ("path", "params", "status", "reason"),
    [
        ("/api/v1/files", {"q": "x" * (MAX_QUERY + 1)}, 400, "at most 256"),
        ("/api/v1/files", {"limit": "0"}, 400, "limit must be from 1 to 100"),
        ("/api/v1/files", {"limit": "1e3"}, 400, "limit must be a whole number"),
        ("/api/v1/files", {"offset": "-1"}, 400, "offset must be a whole number"),
        ("/api/v1/files/abc", {}, 400, "64 hexadecimal digits"),
        ("/api/v1/files/" + "g" * 64, {}, 400, "64 hexadecimal digits"),
        ("/api/v1/files/" + "ab" * 32, {}, 404, "no file with id abababab"),
        ("/api/v1/nothing", {}, 404, "Not Found"),
        ("/api/v1/peers", {"limit": "100000"}, 400, "limit must be from 1 to 1000"),
    ],
)
async def test_bad_requests_get_json_errors_with_the_right_status(tracker: RunningTracker, path: str, params: dict[str, str], status: int, reason: str) -> None:
    async with client(tracker) as http:
        reply = await http.get(path, params=params)
    assert reply.status_code == status
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["status"] == status and reason in body["error"]


async def test_pages_answer_errors_as_pages(tracker: RunningTracker) -> None:
    async with client(tracker) as http:
        missing = await http.get("/files/" + "ab" * 32)
        bad = await http.get("/", params={"q": "a", "limit": "x"})
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"] and "no file with id" in missing.text
    assert bad.status_code == 400 and "limit must be a whole number" in bad.text


async def test_a_file_shows_its_holders_and_chunk_availability(tracker: RunningTracker) -> None:
    manifest = make_manifest("photos.tar", chunks=4)
    with trio.fail_after(TIMEOUT):
        await seed(tracker, manifest, 7001, chunks=[(0, 2)])
        await seed(tracker, manifest, 7002, chunks=[(1, 3)])
        async with client(tracker) as http:
            detail = (await http.get(f"/api/v1/files/{manifest.hex_id}")).json()
            page = (await http.get(f"/files/{manifest.hex_id}")).text
    assert [cell["holders"] for cell in detail["availability"]] == [1, 2, 1, 0]
    assert sorted((h["address"], h["chunks_held"]) for h in detail["peers"]) == [("127.0.0.1:7001", 2), ("127.0.0.1:7002", 2)]
    assert page.count('class="cell"') == 4
    assert "2 of 4 chunks" in page


async def test_a_large_file_is_pictured_in_ranges_of_chunks(tracker: RunningTracker) -> None:
    manifest = make_manifest("big.iso", chunks=1000, chunk_size=1024)
    with trio.fail_after(TIMEOUT):
        await seed(tracker, manifest, 7001, chunks=[(0, 500)])
        await seed(tracker, manifest, 7002)
        async with client(tracker) as http:
            detail = (await http.get(f"/api/v1/files/{manifest.hex_id}")).json()
    cells = detail["availability"]
    assert len(cells) <= 256 and cells[0]["first"] == 0 and cells[-1]["last"] == 999
    assert sum(cell["last"] - cell["first"] + 1 for cell in cells) == 1000
    assert cells[0]["holders"] == 2 and cells[-1]["holders"] == 1


async def test_stats_and_peers_list_the_swarm_and_the_protocols_searches(tracker: RunningTracker) -> None:
    with trio.fail_after(TIMEOUT):
        await seed(tracker, make_manifest("a.txt"), 7001)
        asker = await join_peer(tracker, 7002)
        await asker.request(ListFiles("a."))
        await asker.request(Stats())
        lookup = await open_client(tracker.host, tracker.port)
        await lookup.hello(capabilities={"lookup": 1})
        await lookup.request(Lookup("a.txt", 10))
        async with client(tracker) as http:
            await http.get("/", params={"q": "from the web"})
            stats = (await http.get("/api/v1/stats")).json()
            peers = (await http.get("/api/v1/peers")).json()
            metrics = (await http.get("/metrics")).text
    assert (stats["files"], stats["peers"], stats["replicas"]) == (1, 2, 1)
    searches = [(s["pattern"], s["results"], s["source"]) for s in stats["recent_searches"]]
    assert searches[:3] == [("from the web", 0, "web"), ("a.txt", 1, "LOOKUP"), ("a.", 1, "LIST_FILES")]
    assert sorted(p["address"] for p in peers["peers"]) == ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert all(p["online"] for p in peers["peers"])
    assert "chunkswarm_tracker_peers 2.0" in metrics and "chunkswarm_tracker_files 1.0" in metrics
    assert "chunkswarm_tracker_searches_total 3.0" in metrics


async def test_every_name_is_escaped(tracker: RunningTracker) -> None:
    name = '<script>document.title="pwned"<script>.txt'
    manifest = make_manifest(name)
    with trio.fail_after(TIMEOUT):
        await seed(tracker, manifest, 7001)
        async with client(tracker) as http:
            pages = [(await http.get(path, params=params)).text for path, params in
                     [("/", {"q": "<script>"}), (f"/files/{manifest.hex_id}", {}), ("/stats", {})]]  # fmt: skip
    for page in pages:
        assert "<script>document" not in page
    assert "&lt;script&gt;document.title=&#34;pwned&#34;&lt;script&gt;.txt" in pages[0]
    assert "&lt;script&gt;" in pages[2]  # the search pattern, logged


async def test_the_web_port_defaults_to_the_protocol_port_plus_one_and_a_taken_one_is_only_a_warning(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
    if base >= 65534:
        pytest.skip("the free port found is the last one")
    running = await nursery.start(serve_tracker, TrackerConfig(port=base, http_host="127.0.0.1"))
    assert running.http_url == f"http://127.0.0.1:{base + 1}/"
    with caplog.at_level(logging.WARNING, logger="tracker.web.server"):
        second = await nursery.start(serve_tracker, TrackerConfig(port=0, http_host="127.0.0.1", http_port=base + 1))
    assert second.http_url is None
    assert f"no web UI: cannot listen on 127.0.0.1:{base + 1}" in caplog.text
    client_ = await open_client(second.host, second.port)  # the tracker itself serves on
    await client_.register(7001)


async def test_http_connections_beyond_the_cap_are_closed_and_the_protocol_serves_on(nursery: trio.Nursery) -> None:
    running = await start(nursery, max_http_connections=2)
    assert running.http_url is not None
    port = int(running.http_url.rsplit(":", 1)[1].strip("/"))
    with trio.fail_after(TIMEOUT):
        idle = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
        await idle[0].send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a head that never ends
        extra = await trio.open_tcp_stream("127.0.0.1", port)
        await extra.send_all(b"GET /api/v1/stats HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await extra.receive_some(1024) == b""  # closed at accept
        peer = await join_peer(running, 7001)  # the protocol port answers meanwhile
        await peer.aclose()
        for stream in idle:
            await stream.aclose()


async def test_a_private_trackers_web_ui_wants_the_swarms_token(nursery: trio.Nursery) -> None:
    swarm = SwarmFile.create("team")
    running = await start(nursery, swarm=swarm)
    token = web_token(swarm)
    async with client(running, follow_redirects=False) as http:
        refused = await http.get("/api/v1/files")
        wrong = await http.get("/api/v1/stats", headers={"Authorization": "Bearer " + "0" * len(token)})
        metrics = await http.get("/metrics")
        page = await http.get("/stats")
        allowed = await http.get("/api/v1/stats", headers={"Authorization": f"Bearer {token}"})
        bad_login = await http.post("/login", data={"token": "guess", "next": "/stats"})
        login = await http.post("/login", data={"token": token, "next": "/stats"})
        cookie = login.cookies.get("chunkswarm_token")
        offsite = await http.post("/login", data={"token": token, "next": "//evil.example/"})
    async with client(running, follow_redirects=False) as fresh:
        with_cookie = await fresh.get("/stats", headers={"Cookie": f"chunkswarm_token={cookie}"})
        wrong_cookie = await fresh.get("/stats", headers={"Cookie": "chunkswarm_token=" + "1" * len(token)})
    assert refused.status_code == wrong.status_code == metrics.status_code == 401
    assert refused.json()["status"] == 401 and "web token" in refused.json()["error"]
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fstats"
    assert allowed.status_code == 200 and allowed.json()["files"] == 0
    assert bad_login.status_code == 401 and "not this swarm" in bad_login.text and "chunkswarm_token" not in bad_login.headers.get("set-cookie", "")
    assert login.status_code == 303 and login.headers["location"] == "/stats" and cookie == token
    assert "httponly" in login.headers["set-cookie"].lower() and "samesite=strict" in login.headers["set-cookie"].lower()
    assert with_cookie.status_code == 200 and "Tracker stats" in with_cookie.text
    assert wrong_cookie.status_code == 303
    assert offsite.headers["location"] == "/"
