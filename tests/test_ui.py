"""peer/ui.py: progress events as rich bars on a terminal, log lines otherwise."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from chunkswarm.ui import LogProgress, RichProgress, progress_display


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
    assert "data.bin: 3000 bytes, 1000 already here" in text
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
    assert "hashing big.iso (2097152 bytes)" in caplog.text and "hashing big.iso: 50%" in caplog.text
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
