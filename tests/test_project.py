"""The project's own promises: the README's commands, CI calling them, the layout."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from chunkswarm import __version__
from chunkswarm.cli import cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_opens_with_two_commands() -> None:
    commands = _readme_commands()
    assert len(commands) >= 2
    head = (ROOT / "README.md").read_text().split("\n\n")
    assert head[1].startswith("```sh") and head[2].startswith("```sh")
    assert "pip install" in commands[0] and "pip install" in commands[1] and "[test]" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


def test_cli_version_and_help() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_cli_group_has_every_subcommand() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    for name in ("tracker", "seed", "get", "ls"):
        assert f"  {name} " in result.output


@pytest.mark.parametrize(("command", "absent"), [("tracker", "peer.node"), ("get", "tracker.service"), ("seed", "tracker.service")])
def test_a_command_loads_only_its_own_engine(command: str, absent: str) -> None:
    # A process starts faster (and a swarm of them costs less CPU) when `chunkswarm tracker` never imports the peer engine.
    script = (
        "import sys\nfrom chunkswarm.cli import cli\n"
        f"try:\n    cli([{command!r}, '--help'])\nexcept SystemExit:\n    pass\n"
        f"print({absent!r} in sys.modules, {command!r} in cli.commands)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "False True"


def test_a_missing_system_program_skips_here_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    # A CI run must not pass by testing less: where a program the tests run is missing, CI fails.
    from tests.system import program

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-program-here is not installed"):
        program("no-such-program-here")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"system_packages\.sh"):
        program("no-such-program-here")


def test_the_test_command_installs_the_programs_the_tests_run() -> None:
    from tests.system import PACKAGE_OF

    script = (ROOT / "tests" / "system_packages.sh").read_text()
    listed = re.search(r'^PACKAGES="([^"]+)"', script, re.M)
    assert listed is not None
    assert set(PACKAGE_OF.values()) <= set(listed.group(1).split())
    assert "tests/system_packages.sh" in _readme_commands()[1]
