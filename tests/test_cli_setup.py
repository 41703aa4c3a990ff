"""The first minutes with the ``chunkswarm`` command: each command's help, tracker addresses, the state folder, log files, the licence."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import trio
from click.testing import CliRunner

from chunkswarm import peer_commands
from chunkswarm.cli import cli
from common.address import TRACKER_PORT
from common.messages import FileList
from peer.config import PeerConfig, default_state_dir
from tests.procs import ROOT, peer_args, spawn, start_tracker, wait_until

PEER_ONLY = ("--host", "--port", "--label", "--state-dir")


def options_of(command: str) -> set[str]:
    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return set(re.findall(r"^\s+(?:-\w, )?(--[\w-]+)", result.output, re.MULTILINE))


@pytest.mark.parametrize(("command", "own"), [("ls", {"--limit"}), ("stats", set())])
def test_commands_that_only_ask_list_no_peer_options(command: str, own: set[str]) -> None:
    assert options_of(command) == {"--tracker", "--swarm", "--log-level", "--help", *own}  # --swarm: how to reach a private tracker


def test_every_command_lists_the_options_it_uses() -> None:
    assert set(PEER_ONLY) | {"--tracker", "--log-file"} <= options_of("seed")
    assert set(PEER_ONLY) | {"--tracker", "--output", "--seed"} <= options_of("get")
    assert "--log-file" not in options_of("get")
    assert {"--port", "--db", "--log-file", "--max-connections-per-ip", "--max-peers-per-ip"} <= options_of("tracker")


def test_the_help_says_where_the_state_is_and_the_default_port() -> None:
    text = " ".join(CliRunner().invoke(cli, ["--help"], terminal_width=200).output.split())
    assert str(default_state_dir()) in text and f"port {TRACKER_PORT}" in text


class Asked:
    """Stands in for ``_run``: records the config a command built, answers nothing."""

    def __init__(self) -> None:
        self.configs: list[PeerConfig] = []

    def __call__(self, async_fn: Any, config: PeerConfig, *args: Any) -> Any:
        self.configs.append(config)
        return (FileList(()), True, None) if async_fn is peer_commands._ls else None


@pytest.mark.parametrize(
    ("given", "expected"),
    [("localhost", ("localhost", 7070)), ("tracker.example:9000", ("tracker.example", 9000)), ("::1", ("::1", 7070)),
     ("[::1]", ("::1", 7070)), ("[fe80::1]:8000", ("fe80::1", 8000))],
)
def test_a_tracker_without_a_port_is_on_7070(monkeypatch: pytest.MonkeyPatch, given: str, expected: tuple[str, int]) -> None:
    asked = Asked()
    monkeypatch.setattr(peer_commands, "_run", asked)
    result = CliRunner().invoke(cli, ["ls", "--tracker", given])
    assert result.exit_code == 0, result.output
    assert asked.configs[0].tracker == expected


def test_the_state_folder_is_said_once_when_it_is_created(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.setattr(peer_commands, "_run", Asked())
    state = tmp_path / "state"
    runner = CliRunner()
    first = runner.invoke(cli, ["seed", str(tmp_path), "--state-dir", str(state)])
    assert first.exit_code == 0, first.output
    assert f"created {state}: chunkswarm keeps this peer's state there" in first.output and state.is_dir()
    again = runner.invoke(cli, ["seed", str(tmp_path), "--state-dir", str(state)])
    assert again.exit_code == 0 and "created" not in again.output


async def test_tracker_and_seed_log_to_a_file_too(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    tracker_log, seed_log = tmp_path / "tracker.log", tmp_path / "seed.log"
    with trio.fail_after(30):
        async with start_tracker(nursery, tmp_path / "t.db", "--log-file", str(tracker_log)) as (_, port):
            share = ROOT / "sample_files" / "dir1"
            async with spawn(nursery, "-m", "chunkswarm", "seed", str(share), "--log-file", str(seed_log),
                             *peer_args(port, tmp_path / "s", "alice")) as seeder:  # fmt: skip
                await seeder.wait_for("seeding file2_dir1.txt")
                # The file gets each line just after the console does.
                await wait_until(lambda: "seeding file2_dir1.txt" in seed_log.read_text())
    # Plain lines, in addition to the console (which the tests above read).
    tracker_text, seed_text = tracker_log.read_text(), seed_log.read_text()
    assert f"INFO    tracker.service: tracker listening on 127.0.0.1:{port}" in tracker_text
    assert "file 'file2_dir1.txt' published (e1729d7d7b6223fe, 624 B, 1 chunk)" in tracker_text
    assert "seeding file2_dir1.txt" in seed_text and "\x1b[" not in seed_text


def test_the_licence_is_the_one_setup_cfg_names() -> None:
    assert "license = MIT" in (ROOT / "setup.cfg").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the chunkswarm authors" in text
