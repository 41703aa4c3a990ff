"""The web UI from the command line: ``chunkswarm tracker --http/--no-http``, and the token ``swarm show`` prints."""

from __future__ import annotations

import pathlib

import httpx
import trio
from click.testing import CliRunner

from chunkswarm.cli import cli
from common.swarm import parse_swarm_file, web_token
from tests.procs import start_tracker

TIMEOUT = 30


async def test_the_tracker_command_logs_its_web_uis_address_and_serves_it(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with start_tracker(nursery, tmp_path / "tracker.db") as (child, _):
            url = (await child.wait_for(r"web UI at (http://127\.0\.0\.1:\d+/)")).group(1)
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                stats = (await http.get(url + "api/v1/stats")).json()
    assert stats["files"] == 0


async def test_no_http_serves_no_web_ui(nursery: trio.Nursery, tmp_path: pathlib.Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with start_tracker(nursery, tmp_path / "tracker.db", "--no-http", "--log-level", "debug") as (child, _):
            await child.wait_for(r"tracker node id")
            assert "web UI" not in child.text


def test_http_options_are_checked() -> None:
    runner = CliRunner()
    both = runner.invoke(cli, ["tracker", "--http", "127.0.0.1:8080", "--no-http"])
    bad = runner.invoke(cli, ["tracker", "--http", "127.0.0.1"])
    assert both.exit_code == 2 and "--http and --no-http contradict each other" in both.output
    assert bad.exit_code == 2 and "missing ':PORT'" in bad.output


def test_swarm_show_prints_the_web_token(tmp_path: pathlib.Path) -> None:
    runner = CliRunner()
    path = tmp_path / "team.swarm"
    assert runner.invoke(cli, ["swarm", "init", str(path)]).exit_code == 0
    shown = runner.invoke(cli, ["swarm", "show", str(path)])
    token = web_token(parse_swarm_file(path.read_text()))
    assert shown.exit_code == 0 and f"web token: {token}" in shown.output
    assert parse_swarm_file(path.read_text()).secret.hex() not in shown.output
