"""Issue 12, finding 9: names shown as typed (never as rich markup), and invisible or reordering characters refused at publish."""

from __future__ import annotations

import io
import logging
import pathlib
import unicodedata

import pytest
import trio
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import Progress

from chunkswarm.console import setup_logging
from chunkswarm.demo import DemoOutcome, PeerReport, summary_table
from chunkswarm.ui import RichProgress, file_table, progress_columns, stats_table
from common.errors import TrackerError, ValidationError
from common.framing import ErrorCode
from common.manifest import Manifest, check_publishable_name, shown_name, validate_name
from common.messages import FileEntry
from tracker.registry import check_manifest

MARKUP = ["[reverse]blank[/reverse]", "invoice.pdf[conceal] (evil)", "[link=https://evil.example]click[/link]"]
INVISIBLE = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f",
             "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]  # fmt: skip


def _render(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=250, force_terminal=True, color_system="truecolor").print(renderable)
    return out.getvalue()


def _entry(name: str) -> FileEntry:
    return FileEntry(b"\x01" * 32, name, 0, 1024, 0, 1, 1)  # a listing's name is any text: markup with "/" too


@pytest.mark.parametrize("name", MARKUP)
def test_a_file_table_shows_markup_as_typed(name: str) -> None:
    rendered = _render(file_table([_entry(name)], "files"))
    assert name in rendered and "\x1b]8;" not in rendered  # as typed, and no hyperlink escape
    assert "\x1b[7m" not in rendered and "\x1b[8m" not in rendered  # neither reversed nor concealed


@pytest.mark.parametrize("name", MARKUP)
def test_a_progress_bar_shows_markup_as_typed(name: str) -> None:
    out = io.StringIO()
    console = Console(file=out, width=250, force_terminal=True, color_system="truecolor")
    with Progress(*progress_columns(), console=console, auto_refresh=False) as progress:
        sink = RichProgress(progress)
        sink.started(name, 100, 0)
        sink.chunk(0, 50, f"{name} (127.0.0.1:1)")  # a peer's agent is chosen by that peer
        progress.refresh()
    rendered = out.getvalue()
    assert name in rendered and "\x1b]8;" not in rendered and "\x1b[8m" not in rendered


def test_stats_and_demo_tables_show_names_as_typed() -> None:
    name = MARKUP[1]
    assert name in _render(stats_table({name: 1}, "tracker"))
    report = PeerReport(name, "uploader", "127.0.0.1:1", 0, 0, ((name, 1),), pathlib.Path("/x"), True)
    outcome = DemoOutcome(pathlib.Path("/x") / name, "00" * 32, 1, 1024, 1, pathlib.Path("/x"), (report,))
    rendered = _render(summary_table(outcome))
    assert rendered.count(name) >= 3 and "\x1b[8m" not in rendered


def test_log_lines_show_markup_as_typed(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("INFO")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RichHandler):
            assert not handler.markup
    logging.getLogger("test").info("published %s", MARKUP[2])
    assert MARKUP[2] in capsys.readouterr().err


@pytest.mark.parametrize("char", INVISIBLE, ids=[f"U+{ord(c):04X}" for c in INVISIBLE])
def test_invisible_and_reordering_characters_are_refused_at_publish(char: str) -> None:
    name = f"victim{char}.bin"
    with pytest.raises(ValidationError, match=f"U\\+{ord(char):04X}"):
        check_publishable_name(name)
    # The tracker's check is the same rule.
    with pytest.raises(TrackerError) as refused:
        check_manifest(Manifest.from_hashes(name, 0, 1024, []))
    assert refused.value.code == ErrorCode.INVALID_MANIFEST
    # An entry published before the rule still decodes, and is shown with the character spelled out.
    assert validate_name(name) == name
    assert shown_name(name) == f"victim\\u{ord(char):04x}.bin"
    assert f"victim\\u{ord(char):04x}.bin" in _render(file_table([_entry(name)], "files"))


def test_control_characters_are_refused_as_before() -> None:
    for char in "\x00\x1b\x7f\x85\u2028":
        with pytest.raises(ValidationError):
            check_publishable_name(f"a{char}b")


def test_ordinary_names_pass() -> None:
    for name in ["report.pdf", "café.txt", "日本語.bin", "emoji 🎉.png", "Ωmega [draft].doc"]:
        assert check_publishable_name(name) == name


async def test_a_peer_refuses_to_publish_such_a_name_before_sending(tmp_path: pathlib.Path) -> None:
    from peer.config import PeerConfig
    from peer.node import open_peer

    path = tmp_path / "share" / "victim\u200b.bin"
    path.parent.mkdir()
    path.write_bytes(b"x" * 1000)
    with trio.fail_after(10):
        async with open_peer(PeerConfig(tracker=("127.0.0.1", 9), state_dir=tmp_path / "state")) as peer:
            with pytest.raises(ValidationError, match=r"cannot publish .*victim\\u200b\.bin: .*U\+200B"):
                await peer.publish([path])
            assert not peer.library.files


@pytest.mark.parametrize("char", [chr(code) for code in range(128)])
def test_an_ascii_name_is_checked_as_by_its_unicode_categories(char: str) -> None:
    # ASCII names take a path without a category look-up per character: the same verdicts as with them.
    name = f"a{char}b"
    refused = char in "/\\" or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp", "Cf")
    for check in (validate_name, check_publishable_name):
        if refused:
            with pytest.raises(ValidationError):
                check(name)
        else:
            assert check(name) == name
