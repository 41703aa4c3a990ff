"""demo.py as a user runs it: a subprocess from another directory, judged by its exit status and output."""

from __future__ import annotations

import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys

import trio

from chunkswarm.demo import DemoOutcome, PeerReport
from tests.test_gateway_swarm import curl
from tests.test_peer_processes import Child

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHUNK_LINE = re.compile(r"(peer-\d+) <- chunk (\d+)/(\d+) of (\S+) from (peer-\d+) \(127\.0\.0\.1:\d+\)")


async def run_demo(cwd: pathlib.Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, str(ROOT / "demo.py"), *args], cwd=cwd, capture_stdout=True, capture_stderr=True, check=False
        )


def output(result: subprocess.CompletedProcess[bytes]) -> str:
    return (result.stdout + result.stderr).decode(errors="replace")


async def test_default_scenario_succeeds_with_chunks_from_two_sources(tmp_path: pathlib.Path) -> None:
    result = await run_demo(tmp_path)
    text = output(result)
    assert result.returncode == 0, text
    lines = CHUNK_LINE.findall(text)
    # Two downloaders (peer-3, peer-4), each receiving all 9 chunks of 1 KiB exactly once.
    received = {(downloader, int(index)) for downloader, index, count, name, _ in lines}
    assert {name for *_, name, _ in lines} == {"file1_dir1.txt"} and {count for _, _, count, _, _ in lines} == {"9"}
    assert received == {(downloader, index) for downloader in ("peer-3", "peer-4") for index in range(1, 10)}
    assert len({source for *_, source in lines}) >= 2
    assert text.count("SHA-256 matches") == 4
    assert "OK: peer-3, peer-4 each hold a byte-identical copy of file1_dir1.txt; the downloaders traded " in text
    # The temporary folder is gone.
    folders = re.findall(r"(/\S*chunkswarm-demo-\w+)/peer-\d+/", text)
    assert folders and not any(pathlib.Path(folder).exists() for folder in folders)


ROW = re.compile(r"│ (peer-\d+) +│ (uploader|downloader) +│ \S+ +│ +(\d+) │ +(\d+) │ ([^│]+?) +│")


async def test_the_downloaders_trade_with_each_other(tmp_path: pathlib.Path) -> None:
    # Over real runs: every one is right, and the downloaders take chunks from each other as well as from the
    # uploaders. Whether they do in one run is timing: a downloader hears of the other's chunks from the
    # tracker (up to ~0.6 s late), and on a loaded machine about one run in 15 finishes from the uploaders
    # alone. So each run's counts must agree, and the trade must show in at least one of three runs.
    trades = []
    for _ in range(3):
        result = await run_demo(tmp_path)
        text = output(result)
        assert result.returncode == 0, text
        rows = {peer: (role, int(up), int(down), sources) for peer, role, up, down, sources in ROW.findall(result.stderr.decode())}
        assert set(rows) == {"peer-1", "peer-2", "peer-3", "peer-4"}, text
        traded = re.search(r"the downloaders traded (\d+) chunks? with each other", text)
        # What each took from the other, as its row says; a chunk sent twice near the end (a duplicate
        # request, its copy in flight when the first arrived) counts as sent, not as taken.
        taken = sum(int(n) for row, other in (("peer-3", "peer-4"), ("peer-4", "peer-3"))
                    for n in re.findall(rf"{other}: (\d+)", rows[row][3]))  # fmt: skip
        assert traded and int(traded.group(1)) == taken, text
        assert taken <= rows["peer-3"][1] + rows["peer-4"][1], text
        trades.append(taken)
    assert max(trades) > 0, f"the downloaders traded no chunk in 3 runs: {trades}"


def test_chunk_lines_go_above_the_bars() -> None:
    import io
    import logging

    from rich.console import Console
    from rich.logging import RichHandler

    from chunkswarm.demo import _progress_bars

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system=None, width=120)
    handler = RichHandler(console=console, show_path=False, markup=False, highlighter=None)  # type: ignore[arg-type]
    log = logging.getLogger("test_demo.bars")
    log.addHandler(handler)
    try:
        with _progress_bars(console, ["peer-3"]) as sinks:
            sinks["peer-3"].started("big.bin", 4 << 20, 0)
            sinks["peer-3"].chunk(0, 1 << 20, "peer-1 (127.0.0.1:1)")
            log.warning("peer-3 <- chunk 1/4 of big.bin from peer-1 (127.0.0.1:1)")
    finally:
        log.removeHandler(handler)
    rendered = out.getvalue()
    assert "<- chunk 1/4" in rendered, repr(rendered)
    # The log line is printed on a cleared line (the bars taken away first, drawn again after it), never beside a bar.
    (line,) = [line for line in rendered.split("\n") if "<- chunk" in line]
    assert "━" not in line.rsplit("\x1b[2K", 1)[-1], repr(line)
    assert "MiB" in rendered and "MB" not in rendered.replace("MiB", "")  # binary units on the bars


async def test_other_file_more_peers_and_keep(tmp_path: pathlib.Path) -> None:
    source = ROOT / "sample_files" / "dir3" / "gradient.bmp"
    result = await run_demo(tmp_path, "--peers", "5", "--file", str(source), "--chunk-size", "16384", "--keep")
    text = output(result)
    assert result.returncode == 0, text
    chunks = -(-source.stat().st_size // 16384)
    lines = CHUNK_LINE.findall(text)
    assert {downloader for downloader, *_ in lines} == {"peer-3", "peer-4", "peer-5"}
    assert len(lines) == 3 * chunks
    assert text.count("SHA-256 matches") == 5
    kept = re.search(r"kept the demo's folder: (\S+)", text)
    assert kept is not None
    folder = pathlib.Path(kept.group(1))
    try:
        for label in ("peer-3", "peer-4", "peer-5"):
            assert (folder / label / "downloads" / "gradient.bmp").read_bytes() == source.read_bytes()
    finally:
        shutil.rmtree(folder)


async def test_bad_options_are_explained(tmp_path: pathlib.Path) -> None:
    missing = await run_demo(tmp_path, "--file", str(tmp_path / "nope.bin"))
    assert missing.returncode == 2 and "nope.bin" in output(missing) and "does not exist" in output(missing)
    lonely = await run_demo(tmp_path, "--peers", "1")
    assert lonely.returncode == 2 and "--peers" in output(lonely)


async def test_keep_running_prints_a_join_command_that_works(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(ROOT / "demo.py"), "--keep-running"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    demo = Child(process)
    nursery.start_soon(demo.drain)
    try:
        with trio.fail_after(30):
            await demo.wait_for("Press Ctrl-C to stop everything.")
            match = re.search(r"^ +(\S+ \S+demo_peer\.py --tracker 127\.0\.0\.1:\d+)$", demo.output.decode(), re.MULTILINE)
            assert match is not None, demo.output.decode()
            command = [*shlex.split(match.group(1)), "--download-dir", str(tmp_path / "got"), "--state-dir", str(tmp_path / "state")]
            joined = await trio.run_process(command, stdin=b"c\nd file1_dir1.txt\n", capture_stdout=True, capture_stderr=True)
            assert b"saved file1_dir1.txt (8.8 KiB)" in joined.stdout, joined.stdout + joined.stderr
            assert (tmp_path / "got" / "file1_dir1.txt").read_bytes() == (ROOT / "sample_files" / "dir1" / "file1_dir1.txt").read_bytes()
            # And the file over HTTP, through peer-1's gateway, as printed.
            url = re.search(r"curl -O (http://127\.0\.0\.1:\d+/files/file1_dir1\.txt)", demo.text)
            assert url is not None, demo.text
            status, _, body, _ = await curl(url.group(1))
            assert (status, body) == (200, (ROOT / "sample_files" / "dir1" / "file1_dir1.txt").read_bytes())
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
        await demo.wait_for("tracker stopped")
    finally:
        demo.kill()


def test_outcome_names_every_failed_copy() -> None:
    def report(label: str, matches: bool, error: str = "") -> PeerReport:
        return PeerReport(label, "downloader", "127.0.0.1:1", 0, 9, (), pathlib.Path(f"/w/{label}/f.txt"), matches, error)

    def outcome(*reports: PeerReport) -> DemoOutcome:
        return DemoOutcome(pathlib.Path("f.txt"), "00" * 32, 9000, 1024, 9, pathlib.Path("/w"), reports)

    assert outcome(report("peer-3", True), report("peer-4", True)).ok
    failed = outcome(report("peer-3", False, "no reachable peer holds 2 chunk(s)"), report("peer-4", False))
    assert not failed.ok
    assert failed.problems == ["peer-3 did not finish: no reachable peer holds 2 chunk(s)", "peer-4's copy at /w/peer-4/f.txt does not match f.txt"]
