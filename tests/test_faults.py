"""What real networks do, end to end: real processes over 127.0.0.1 and a 32 MiB file.

The tracker, the seeders and the downloader are ``python -m chunkswarm tracker``,
``python -m chunkswarm seed`` and ``python -m chunkswarm get``. Where a scenario needs the
download to be stopped at an exact point, a holder is ``tests/liar_peer.py`` in
``honest`` mode with a budget file (it sends exactly that many chunks, then
holds further requests), or a real seeder frozen with SIGSTOP until the test
lets it go; nothing waits on a sleep, every wait polls a condition under a
deadline. Each test prints what it measured (``pytest -s`` shows it).
"""

from __future__ import annotations

import errno
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest
import trio

from common.errors import ChunkswarmError, StorageError
from common.manifest import build_manifest
from common.messages import FileList, Holders, ListFiles, WhoHas
from peer import download_file
from peer.config import PeerConfig
from peer.node import open_peer
from peer.storage.fs import storage_error
from peer.tasks import leaves
from tests.procs import Child, part_state, peer_args, spawn, start_tracker, wait_until
from tests.tracker_client_helper import open_client

pytestmark = pytest.mark.slow

CHUNK = 256 * 1024
SIZE = 32 * 1024 * 1024
CHUNKS = SIZE // CHUNK
#: A bound for each scenario; reaching it is a failure, not a measurement.
DEADLINE = 60
TRACKER_OPTIONS = ("--heartbeat-interval", "1", "--peer-timeout", "5")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("src") / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture
async def procs() -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        yield nursery
        nursery.cancel_scope.cancel()


def done_count(state: pathlib.Path) -> int:
    ranges = part_state(state)
    return sum(stop - start for start, stop in ranges) if ranges else 0


def done_chunks(state: pathlib.Path) -> list[int]:
    return [i for start, stop in part_state(state) or [] for i in range(start, stop)]


def uploaded_bytes(child: Child) -> int:
    found = re.search(r"uploaded \d+ chunks? \([^,]+, (\d+) bytes\)", child.text)
    assert found, child.text
    return int(found.group(1))


def liar_sent(child: Child) -> int:
    counts = [int(n) for n in re.findall(r"liar sent (\d+) chunks", child.text)]
    return max(counts, default=0)


def seed(procs: trio.Nursery, path: pathlib.Path, port: int, tmp_path: pathlib.Path) -> AbstractAsyncContextManager[Child]:
    """A real ``peer seed`` of ``path`` labelled seed-s."""
    return spawn(procs, "-m", "chunkswarm", "seed", str(path), "--chunk-size", str(CHUNK), *peer_args(port, tmp_path / "s", "seed-s"), name="seed-s")


def liar(procs: trio.Nursery, path: pathlib.Path, port: int, *options: str, name: str) -> AbstractAsyncContextManager[Child]:
    """``tests/liar_peer.py`` holding ``path`` (``options``: its mode, its budget file)."""
    return spawn(procs, "-m", "tests.liar_peer", str(path), "--tracker", f"127.0.0.1:{port}", "--chunk-size", str(CHUNK), *options, name=name)


def report(name: str, **figures: object) -> None:
    print(f"\n[{name}] " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- 1. a seeder killed mid-download -------------------------------------------------------
async def test_seeder_killed_mid_download_another_holder_finishes(big: pathlib.Path, tmp_path: pathlib.Path, procs: trio.Nursery) -> None:
    budget = tmp_path / "budget"
    budget.write_text("30")
    out = tmp_path / "out"
    with trio.fail_after(DEADLINE):
        async with start_tracker(procs, tmp_path / "t.db", *TRACKER_OPTIONS) as (_, port):
            async with seed(procs, big, port, tmp_path) as survivor:
                await survivor.wait_for_text("seeding big.bin")
                survivor.signal(signal.SIGSTOP)  # frozen until the other seeder is dead: it cannot finish the job early
                try:
                    async with liar(procs, big, port, "--budget-file", str(budget), name="victim") as victim, \
                            spawn(procs, "-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", "--request-timeout", "10", "--stall-timeout", "20",
                                  *peer_args(port, tmp_path / "g", "getter"), name="getter") as getter:
                        await victim.wait_for_text("liar holding a request")
                        await victim.wait_for_text("liar sent 30 chunks")
                        victim.kill()
                        killed_at = time.monotonic()
                        await victim.wait_exit()
                        survivor.signal(signal.SIGCONT)
                        code = await getter.wait_exit()
                        finished = time.monotonic() - killed_at
                finally:
                    survivor.signal(signal.SIGCONT)
                assert code == 0, getter.text
            assert (out / "big.bin").read_bytes() == big.read_bytes()
            assert not (out / "big.bin.part").exists() and "Traceback" not in getter.text
            found = re.search(r"chunks from (.+?: \d+(?:, .+?: \d+)*)\)", getter.text)
            assert found and "seed-s" in found.group(1), getter.text
            report("seeder killed", killed_after_chunks=30, seconds_from_kill_to_done=round(finished, 2), summary=found.group(1),
                   getter_peak_rss_kib=getter.peak_rss_kib)


# -- 2. every holder vanishes ----------------------------------------------------------------
async def test_all_holders_vanish_then_a_seeder_returns(big: pathlib.Path, tmp_path: pathlib.Path, procs: trio.Nursery) -> None:
    budget = tmp_path / "budget"
    budget.write_text("40")
    out = tmp_path / "out"
    state = out / "big.bin.part.state"
    with trio.fail_after(DEADLINE):
        async with start_tracker(procs, tmp_path / "t.db", *TRACKER_OPTIONS) as (_, port):
            async with liar(procs, big, port, "--budget-file", str(budget), name="holder") as holder:
                await holder.wait_for_text("liar announced big.bin")
                async with spawn(procs, "-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", "--stall-timeout", "2",
                                 *peer_args(port, tmp_path / "g", "getter"), name="getter") as getter:
                    await wait_until(lambda: done_count(state) == 40)
                    holder.kill()
                    killed_at = time.monotonic()
                    code = await getter.wait_exit()
                    gave_up_after = time.monotonic() - killed_at
            assert code == 1, getter.text
            assert "no reachable peer holds 88 chunks of big.bin" in getter.text
            assert "Traceback" not in getter.text
            assert (out / "big.bin.part").exists() and state.exists() and not (out / "big.bin").exists()
            done = done_chunks(state)
            assert len(done) == 40
            missing_bytes = SIZE - 40 * CHUNK

            async with seed(procs, big, port, tmp_path) as seeder:
                await seeder.wait_for_text("seeding big.bin")
                async with spawn(procs, "-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", *peer_args(port, tmp_path / "g", "getter"),
                                 name="again") as again:
                    assert await again.wait_exit() == 0, again.text
                seeder.signal(signal.SIGTERM)
                await seeder.wait_exit()
            sent = uploaded_bytes(seeder)
        assert (out / "big.bin").read_bytes() == big.read_bytes()
        assert "resuming big.bin: 40 of 128 chunks already verified" in again.text
        assert sent <= missing_bytes + CHUNK  # the missing part, plus at most one chunk for the one peer
        report("holders vanish", gave_up_seconds=round(gave_up_after, 2), missing_bytes=missing_bytes, refetched_bytes=sent,
               getter_peak_rss_kib=max(getter.peak_rss_kib, again.peak_rss_kib))


# -- 3. the downloader killed again and again ---------------------------------------------------
def _check_state_is_true(state: pathlib.Path, part: pathlib.Path, source: bytes) -> list[int]:
    """Every chunk the resume state lists is on disk in full; returns them."""
    done = done_chunks(state)
    data = part.read_bytes()
    for index in done:
        assert data[index * CHUNK : (index + 1) * CHUNK] == source[index * CHUNK : (index + 1) * CHUNK], f"chunk {index} listed but not written"
    return done


async def test_downloader_killed_repeatedly_resumes(big: pathlib.Path, tmp_path: pathlib.Path, procs: trio.Nursery) -> None:
    rng = random.Random(os.urandom(8))
    kill_points = sorted(rng.sample(range(5, CHUNKS - 5), 3))
    source = big.read_bytes()
    budget = tmp_path / "budget"
    out = tmp_path / "out"
    part, state = out / "big.bin.part", out / "big.bin.part.state"
    damaged = 0
    resumed_lines = []
    with trio.fail_after(DEADLINE):
        async with start_tracker(procs, tmp_path / "t.db", *TRACKER_OPTIONS) as (_, port):
            budget.write_text("0")
            async with liar(procs, big, port, "--budget-file", str(budget), name="holder") as holder:
                await holder.wait_for_text("liar announced big.bin")
                for run, point in enumerate(kill_points):
                    # The holder sends every damaged chunk once more: the getter ends the run with exactly ``point`` chunks.
                    budget.write_text(str(point + damaged))
                    expected_done = point
                    async with spawn(procs, "-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", *peer_args(port, tmp_path / "g", "getter"),
                                     name=f"getter-{run}") as getter:
                        await wait_until(lambda expected=expected_done: done_count(state) == expected)
                        getter.kill()
                        assert await getter.wait_exit() == -signal.SIGKILL
                    resumed_lines += re.findall(r"resuming big\.bin: [^(]*?verified(?: \(\d+ listed chunks? failed re-verification\))?", getter.text)
                    done = _check_state_is_true(state, part, source)
                    assert len(done) == expected_done and not (out / "big.bin").exists()
                    # Damage the part file behind the state's back: the next run must notice.
                    if run == 0:
                        cut = max(done) * CHUNK + CHUNK // 2  # the last listed chunk loses its second half
                        os.truncate(part, cut)
                    else:
                        victim = rng.choice(done)
                        with open(part, "r+b") as handle:
                            handle.seek(victim * CHUNK + 1000)
                            handle.write(b"\xff" * 16 if source[victim * CHUNK + 1000] != 0xFF else b"\x00" * 16)
                    damaged += 1
                budget.write_text(str(10**6))
                async with spawn(procs, "-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", *peer_args(port, tmp_path / "g", "getter"),
                                 name="getter-last") as last:
                    assert await last.wait_exit() == 0, last.text
                resumed_lines += re.findall(r"resuming big\.bin: [^(]*?verified(?: \(\d+ listed chunks? failed re-verification\))?", last.text)
                await wait_until(lambda: liar_sent(holder) >= CHUNKS + damaged)
                sent = liar_sent(holder)
        assert (out / "big.bin").read_bytes() == source
        assert not part.exists() and not state.exists()
        # Each damaged chunk was caught by re-verification and fetched once more; nothing else was fetched twice.
        assert sent == CHUNKS + damaged, (sent, resumed_lines)
        assert sum("failed re-verification" in line for line in resumed_lines) == 2, resumed_lines
        report("downloader killed", kill_points=kill_points, chunks_sent=sent, refetched_chunks=sent - CHUNKS, resumes=resumed_lines,
               getter_peak_rss_kib=last.peak_rss_kib)


# -- 5. lying peers -------------------------------------------------------------------------
async def test_lying_peers_are_dropped_and_honest_ones_finish(big: pathlib.Path, tmp_path: pathlib.Path, procs: trio.Nursery) -> None:
    out = tmp_path / "out"
    with trio.fail_after(DEADLINE):
        async with start_tracker(procs, tmp_path / "t.db", *TRACKER_OPTIONS) as (_, port):
            async with seed(procs, big, port, tmp_path) as honest:
                await honest.wait_for_text("seeding big.bin")
                honest.signal(signal.SIGSTOP)  # the liars get the downloader to themselves first
                try:
                    liars = {}
                    for mode in ("corrupt", "truncate", "stall", "chatter", "oversize"):
                        liars[mode] = await procs.start(_start_liar, procs, big, port, mode)
                    started = time.monotonic()
                    async with spawn(procs, "-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", "--request-timeout", "2", "--stall-timeout", "30",
                                     *peer_args(port, tmp_path / "g", "getter"), name="getter") as getter:
                        await getter.wait_for(r"banned liar-corrupt")
                        await getter.wait_for(r"banned liar-truncate")
                        await getter.wait_for(r"dropping liar-stall \S+ no answer within 2 s")
                        await getter.wait_for(r"dropping liar-chatter \S+ no answer within 2 s")
                        await getter.wait_for(r"dropping liar-oversize \S+ CHUNK_DATA frame of 16777216 bytes exceeds")
                        dropped_all = time.monotonic() - started
                        honest.signal(signal.SIGCONT)
                        released = time.monotonic()
                        assert await getter.wait_exit() == 0, getter.text
                        done_after = time.monotonic() - released
                finally:
                    honest.signal(signal.SIGCONT)
        assert (out / "big.bin").read_bytes() == big.read_bytes()
        assert "Traceback" not in getter.text
        bad = len(re.findall(r"bad chunk \d+/\d+ of big\.bin from liar-", getter.text))
        found = re.search(r"chunks from (.+?: \d+(?:, .+?: \d+)*)\)", getter.text)
        assert found and "liar" not in found.group(1), getter.text  # not one chunk counted from a liar
        report("lying peers", seconds_to_drop_all_liars=round(dropped_all, 2), seconds_from_honest_to_done=round(done_after, 2),
               bad_chunks_refused=bad, summary=found.group(1), getter_peak_rss_kib=getter.peak_rss_kib)


async def _start_liar(procs: trio.Nursery, big: pathlib.Path, port: int, mode: str, *, task_status: trio.TaskStatus[Child]) -> None:
    async with liar(procs, big, port, "--mode", mode, name=f"liar-{mode}") as child:
        await child.wait_for_text("liar announced big.bin")
        task_status.started(child)
        await trio.sleep_forever()


# -- 6. disk trouble --------------------------------------------------------------------------
async def _get_into(procs: trio.Nursery, port: int, tmp_path: pathlib.Path, out: pathlib.Path, name: str) -> Child:
    async with spawn(procs, "-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", *peer_args(port, tmp_path / "g", name), name=name) as getter:
        await getter.wait_exit()
    return getter


def _assert_clean_failure(getter: Child, out: pathlib.Path, reason: str) -> None:
    assert getter.process.returncode == 1, getter.text
    assert reason in getter.text, getter.text
    assert "Traceback" not in getter.text
    assert not (out / "big.bin").exists()


def _try(*command: str) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


async def test_output_directory_not_writable(big: pathlib.Path, tmp_path: pathlib.Path, procs: trio.Nursery) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with trio.fail_after(DEADLINE):
        async with start_tracker(procs, tmp_path / "t.db", *TRACKER_OPTIONS) as (_, port):
            async with seed(procs, big, port, tmp_path) as seeder:
                await seeder.wait_for_text("seeding big.bin")
                # Root ignores permission bits, so "not writable" is made in ways that hold for root too:
                # the output directory would have to be created inside a regular file ...
                inside_file = blocker / "out"
                getter = await _get_into(procs, port, tmp_path, inside_file, "getter-1")
                _assert_clean_failure(getter, inside_file, "Not a directory")
                # ... and, where mounting is allowed, a read-only bind mount (or, for non-root, mode 0555).
                readonly = tmp_path / "readonly"
                readonly.mkdir()
                mounted = os.geteuid() == 0 and _try("mount", "--bind", str(readonly), str(readonly))
                # Root that cannot mount has no read-only directory to try: the case above stands alone then.
                can_try_read_only = mounted or os.geteuid() != 0
                try:
                    if mounted:
                        assert _try("mount", "-o", "remount,bind,ro", str(readonly))
                    elif can_try_read_only:
                        readonly.chmod(0o555)
                    if can_try_read_only:
                        getter = await _get_into(procs, port, tmp_path, readonly, "getter-2")
                        _assert_clean_failure(getter, readonly, "Read-only file system" if mounted else "Permission denied")
                        assert list(readonly.iterdir()) == []
                finally:
                    if mounted:
                        _try("umount", str(readonly))
                    readonly.chmod(0o755)
        read_only = "mount" if mounted else "chmod" if can_try_read_only else "not tried (root without mount)"
        report("output not writable", inside_a_file="Not a directory", read_only=read_only)


@pytest.fixture
def small_fs(tmp_path: pathlib.Path) -> AsyncIterator[pathlib.Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or not _try("mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount)):
        pytest.skip("needs root and tmpfs; test_disk_full_at_the_storage_layer covers this without them")
    try:
        yield mount
    finally:
        _try("umount", "-l", str(mount))


async def test_disk_fills_up_mid_download(big: pathlib.Path, tmp_path: pathlib.Path, procs: trio.Nursery, small_fs: pathlib.Path) -> None:
    budget = tmp_path / "budget"
    budget.write_text("10")
    out = small_fs / "out"
    with trio.fail_after(DEADLINE):
        async with start_tracker(procs, tmp_path / "t.db", *TRACKER_OPTIONS) as (_, port):
            async with liar(procs, big, port, "--budget-file", str(budget), name="holder") as holder:
                await holder.wait_for_text("liar announced big.bin")
                async with spawn(procs, "-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", *peer_args(port, tmp_path / "g", "getter"),
                                 name="getter") as getter:
                    await wait_until(lambda: done_count(out / "big.bin.part.state") == 10)
                    # Something else fills the disk while the download waits for data.
                    vfs = os.statvfs(small_fs)
                    with open(small_fs / "filler", "wb") as filler:
                        try:
                            filler.write(b"\0" * (vfs.f_bavail * vfs.f_frsize))
                        except OSError as exc:
                            assert exc.errno == errno.ENOSPC
                    budget.write_text(str(10**6))
                    await getter.wait_exit()
            _assert_clean_failure(getter, out, "disk full")
            assert sorted(p.name for p in out.iterdir()) == ["big.bin.part", "big.bin.part.state"]  # no stray temporary file
            # Too small from the start: refused before any transfer.
            (small_fs / "filler").unlink()
            shutil.rmtree(out)
            with open(small_fs / "filler", "wb") as filler:
                filler.write(b"\0" * (20 * 2**20))
            async with liar(procs, big, port, name="holder-2") as holder:
                await holder.wait_for_text("liar announced big.bin")
                early = await _get_into(procs, port, tmp_path, out, "getter-2")
            _assert_clean_failure(early, out, "disk full")
            assert re.search(r"\d+ bytes needed, \d+ free", early.text)
            assert liar_sent(holder) == 0
    report("disk full", mid_download=re.search(r"Error: (.*)", getter.text).group(1)[-60:],  # type: ignore[union-attr]
           up_front=re.search(r"Error: (.*)", early.text).group(1)[-60:])  # type: ignore[union-attr]


async def test_disk_full_at_the_storage_layer(big: pathlib.Path, tmp_path: pathlib.Path, procs: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root: the write of the 6th chunk fails with ENOSPC, in-process, against a real seeder process."""
    real = download_file.verify_and_write
    writes = 0

    def full_after_five(manifest, fd, index, data):  # type: ignore[no-untyped-def]
        nonlocal writes
        manifest.verify_chunk(index, data)
        writes += 1
        if writes > 5:
            raise storage_error("write chunk to", f"fd {fd}", OSError(errno.ENOSPC, "No space left on device"))
        real(manifest, fd, index, data)

    monkeypatch.setattr(download_file, "verify_and_write", full_after_five)
    out = tmp_path / "out"
    with trio.fail_after(DEADLINE):
        async with start_tracker(procs, tmp_path / "t.db", *TRACKER_OPTIONS) as (_, port):
            async with seed(procs, big, port, tmp_path) as seeder:
                await seeder.wait_for_text("seeding big.bin")
                config = PeerConfig(tracker=("127.0.0.1", port), state_dir=tmp_path / "g", label="getter", chunk_size=CHUNK)
                async with open_peer(config) as getter:
                    await getter.connect()
                    with pytest.raises(ChunkswarmError) as caught:
                        await getter.download("big.bin", out)
    # Writes already under way fail too: every error reported is the full disk.
    assert all(isinstance(error, StorageError) and "disk full" in str(error) for error in leaves(caught.value)), caught.value
    assert not (out / "big.bin").exists() and (out / "big.bin.part").exists()
    assert len(done_chunks(out / "big.bin.part.state")) <= 5


# -- 4. the tracker killed and restarted ----------------------------------------------------------
async def test_tracker_killed_and_restarted_during_a_download(big: pathlib.Path, tmp_path: pathlib.Path, procs: trio.Nursery) -> None:
    budget = tmp_path / "budget"
    budget.write_text("32")
    late = tmp_path / "late" / "late.bin"
    late.parent.mkdir()
    late.write_bytes(os.urandom(3 * CHUNK + 5))
    out = tmp_path / "out"
    db = tmp_path / "t.db"
    manifest = build_manifest(big, CHUNK)
    late_manifest = build_manifest(late, CHUNK)
    with trio.fail_after(DEADLINE):
        async with start_tracker(procs, db, *TRACKER_OPTIONS) as (first, port):
            holder = await procs.start(_start_liar_with_budget, procs, big, port, budget)
            getter_cm = spawn(procs, "-m", "chunkswarm", "get", "big.bin", "-o", f"{out}/", "--seed", *peer_args(port, tmp_path / "g", "getter"),
                              name="getter")
            getter = await getter_cm.__aenter__()
            try:
                await holder.wait_for_text("liar sent 32 chunks")
                async with spawn(procs, "-m", "chunkswarm", "seed", str(late), "--chunk-size", str(CHUNK), *peer_args(port, tmp_path / "s", "seed-s"),
                                 name="seed-s") as seeder:
                    await seeder.wait_for_text("seeding late.bin")  # logged once the tracker acknowledged the PUBLISH
                    first.kill()
                    await first.wait_exit()
                    killed_at = time.monotonic()
                    budget.write_text(str(10**6))
                    # The download goes on between the peers while there is no tracker.
                    await getter.wait_for(r"big\.bin -> ")
                    completed_without_tracker = time.monotonic() - killed_at
                    assert (out / "big.bin").read_bytes() == big.read_bytes()
                    await getter.wait_for(r"lost the tracker")
                    async with start_tracker(procs, db, *TRACKER_OPTIONS, port=port) as (second, _):
                        restarted_at = time.monotonic()
                        browser = await open_client("127.0.0.1", port)
                        await browser.hello()
                        listing = await browser.request(ListFiles())
                        assert isinstance(listing, FileList)
                        assert {e.name for e in listing.entries} == {"big.bin", "late.bin"}
                        getter_port = getter.address(r"serving on (127\.0\.0\.1):(\d+)")[1]
                        seeder_port = seeder.address()[1]

                        async def holder_ports(file_id: bytes) -> set[int]:
                            reply = await browser.request(WhoHas(file_id, 50))
                            assert isinstance(reply, Holders)
                            return {h.port for h in reply.holders}

                        while not (getter_port in await holder_ports(manifest.file_id)
                                   and seeder_port in await holder_ports(late_manifest.file_id)):
                            await trio.sleep(0.05)
                        back_after = time.monotonic() - restarted_at
                        await browser.aclose()
            finally:
                await getter_cm.__aexit__(None, None, None)
    report("tracker restart", download_done_seconds_after_kill=round(completed_without_tracker, 2),
           all_peers_back_seconds_after_restart=round(back_after, 2), tracker_peak_rss_kib=second.peak_rss_kib)


async def _start_liar_with_budget(procs: trio.Nursery, big: pathlib.Path, port: int, budget: pathlib.Path, *,
                                  task_status: trio.TaskStatus[Child]) -> None:
    async with liar(procs, big, port, "--budget-file", str(budget), name="holder") as child:
        await child.wait_for_text("liar announced big.bin")
        task_status.started(child)
        await trio.sleep_forever()
