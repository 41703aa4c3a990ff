"""peer/ui.py: progress events as rich bars on a terminal, log lines otherwise."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console
from rich.progress import Progress

from chunkswarm.ui import LogProgress, RichProgress, progress_columns, progress_display


def feed(sink: object) -> None:
    sink.started("data.bin", 3000, 1000)  # type: ignore[attr-defined]
    sink.peers(2)  # type: ignore[attr-defined]
    sink.chunk(1, 1000, "peer-1 (127.0.0.1:1)")  # type: ignore[attr-defined]
    sink.chunk(2, 1000, "peer-2 (127.0.0.1:2)")  # type: ignore[attr-defined]
    sink.finished()  # type: ignore[attr-defined]


def test_plain_lines_when_not_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    console = Console(file=io.StringIO(), force_terminal=False)
    caplog.set_level(logging.INFO)
    with progress_display(console) as sink:
        assert isinstance(sink, LogProgress)
        feed(sink)
    text = caplog.text
    assert "data.bin: 2.9 KiB, 1000 B already here" in text
    assert "chunks from peer-1: 1, peer-2: 1" in text


def test_rich_bar_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with progress_display(console) as sink:
        assert isinstance(sink, RichProgress)
        feed(sink)
    rendered = out.getvalue()
    assert "data.bin" in rendered and "100%" in rendered.replace("100.0%", "100%") and "peer-1:1" in rendered


def test_a_finished_bar_counts_the_peers_that_contributed() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with progress_display(console) as sink:
        sink.started("data.bin", 3000, 1000)
        sink.peers(3)
        sink.chunk(1, 1000, "peer-1 (127.0.0.1:1)")
        sink.chunk(2, 1000, "peer-2 (127.0.0.1:2)")
        sink.peers(0)  # the sessions close before the download reports it is finished
        sink.finished()
    final = out.getvalue().rsplit("data.bin", 1)[-1]
    assert "2 peers" in final and "0 peers" not in final


def hash_file(sink: object) -> None:
    for done in (0, 1 << 20, 2 << 20):
        sink.hashing("big.iso", 2 << 20, done)  # type: ignore[attr-defined]
    sink.finished()  # type: ignore[attr-defined]


def test_hashing_progress_as_plain_lines(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    hash_file(LogProgress(interval=0))
    assert "hashing big.iso (2.0 MiB)" in caplog.text and "hashing big.iso: 50%" in caplog.text
    assert "hashed big.iso in" in caplog.text and "peers" not in caplog.text


def test_hashing_progress_as_a_bar() -> None:
    out = io.StringIO()
    with progress_display(Console(file=out, force_terminal=True, width=160)) as sink:
        hash_file(sink)
    final = out.getvalue().rsplit("hashing big.iso", 1)[-1]
    assert "100%" in final.replace("100.0%", "100%") and "peers" not in final


def test_remote_names_bracket_ipv6_addresses() -> None:
    from peer.status import describe_remote

    assert describe_remote("alice", ("::1", 4000)) == "alice ([::1]:4000)"
    assert describe_remote("", ("127.0.0.1", 4000)) == "127.0.0.1:4000"


def test_file_sizes_read_as_people_read_them() -> None:
    from chunkswarm.ui import format_size

    assert [format_size(n) for n in (0, 1023, 8983, 5 * 1024**3)] == ["0 B", "1023 B", "8.8 KiB", "5.0 GiB"]


def test_chunk_sizes_read_exactly() -> None:
    from chunkswarm.ui import chunk_size_text

    assert [chunk_size_text(n) for n in (1024, 65536, 1 << 20, 16 << 20, 1500)] == ["1 KiB", "64 KiB", "1 MiB", "16 MiB", "1.5 KiB"]


def test_counts_and_rates_read_right() -> None:
    from common.wording import format_rate, plural

    assert [plural(n, "chunk") for n in (0, 1, 2)] == ["0 chunks", "1 chunk", "2 chunks"]
    assert plural(1, "chunk was", "chunks were") == "1 chunk was" and plural(3, "chunk was", "chunks were") == "3 chunks were"
    # Binary units for rates too: never "1.3 GB/s" beside "300.0 MiB".
    assert [format_rate(r) for r in (0.4, 1000, 1.3 * 2**30)] == ["0 B/s", "1000 B/s", "1.3 GiB/s"]


def test_a_finished_download_of_nothing_reads_as_complete(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sink = LogProgress()
    sink.started("data.bin", 3000, 3000)
    sink.finished()
    assert "data.bin: done in 0.0 s (already complete, nothing downloaded)" in caplog.text and "none" not in caplog.text


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stalled_bar_says_stalled_instead_of_an_old_speed_and_eta() -> None:
    from chunkswarm.ui import STALLED_AFTER, RateColumn

    clock = FakeClock()
    progress = Progress(*progress_columns(), console=Console(file=io.StringIO(), force_terminal=True, width=160), get_time=clock,
                        auto_refresh=False)  # fmt: skip
    sink = RichProgress(progress)
    sink.started("data.bin", 10 * 2**20, 0)
    column = RateColumn()
    for _ in range(4):  # 1 MiB a second
        clock.now += 1.0
        sink.chunk(0, 2**20, "peer-1 (127.0.0.1:1)")
    (task,) = progress.tasks
    moving = column.render(task).plain
    assert moving == "1.0 MiB/s 0:00:06", moving
    clock.now += STALLED_AFTER - 0.5
    assert column.render(task).plain == moving  # a short gap between chunks is no stall
    clock.now += 5.0
    assert column.render(task).plain == "stalled 8 s"
    clock.now += 1.0
    sink.chunk(5, 2**20, "peer-1 (127.0.0.1:1)")
    assert column.render(task).plain.endswith("KiB/s 0:00:15")  # moving again: a speed (averaged over the gap), a time left


def test_a_bar_that_never_got_a_byte_stalls_too() -> None:
    from chunkswarm.ui import RateColumn

    clock = FakeClock()
    progress = Progress(*progress_columns(), console=Console(file=io.StringIO(), force_terminal=True), get_time=clock, auto_refresh=False)
    RichProgress(progress).started("data.bin", 1000, 0)
    clock.now += 10
    assert RateColumn().render(progress.tasks[0]).plain == "stalled 10 s"


def test_the_end_of_a_download_says_its_extra_chunks_in_words() -> None:
    from peer.progress import completion_notes

    # 9 chunks, 3 received twice: a third of the file, worth saying; the duplicate requests behind them are not.
    notes = completion_notes(duplicates=8, surplus=3, refetched=1, bad=0, chunk_count=9)
    assert (logging.INFO, "3 chunks were received twice near the end (normal: the last chunks are asked of two peers)") in notes
    assert [level for level, note in notes if "request" in note or "asked of another" in note] == [logging.DEBUG, logging.DEBUG]
    # On a large file the same few are not worth an INFO line; a bad chunk always is.
    quiet = completion_notes(duplicates=20, surplus=1, refetched=0, bad=1, chunk_count=1000)
    assert [level for level, _ in quiet] == [logging.DEBUG, logging.DEBUG, logging.INFO]
    assert quiet[1][1].startswith("1 chunk was received twice") and quiet[2][1] == "1 chunk failed verification and was fetched again"
    assert completion_notes(0, 0, 0, 0, 9) == [] and not any("endgame" in note for _, note in notes + quiet)
