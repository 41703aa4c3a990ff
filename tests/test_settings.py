"""The configuration file (chunkswarm/settings.py): precedence, sections, errors, ``chunkswarm config``."""

from __future__ import annotations

import pathlib

import pytest
from click.testing import CliRunner, Result

from chunkswarm.cli import cli


def _run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={"CHUNKSWARM_TRACKER": "", **(env or {})}, catch_exceptions=False)


@pytest.fixture
def config(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "config.toml"
    path.write_text('[peer]\ntracker = "127.0.0.1:1"\nlabel = "from-peer"\n\n[seed]\nlabel = "from-seed"\nmax-upload-connections = 64\n\n'
                    '[tracker]\nport = 7171\ndb = "/tmp/elsewhere.db"\n')  # fmt: skip
    return path


def test_a_setting_of_the_file_is_used(config: pathlib.Path) -> None:
    result = _run("--config", str(config), "ls")
    assert result.exit_code == 1 and "127.0.0.1:1 unreachable" in result.output


def test_the_command_line_and_the_environment_win_over_the_file(config: pathlib.Path) -> None:
    assert "127.0.0.1:2 unreachable" in _run("--config", str(config), "ls", "--tracker", "127.0.0.1:2").output
    assert "127.0.0.1:3 unreachable" in _run("--config", str(config), "ls", env={"CHUNKSWARM_TRACKER": "127.0.0.1:3"}).output


def test_config_shows_each_value_and_where_it_comes_from(config: pathlib.Path) -> None:
    result = _run("--config", str(config), "config", "seed")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): (line.split("│")[2].strip(), line.split("│")[3].strip())
            for line in result.output.splitlines() if line.startswith("│")}  # fmt: skip
    assert rows["--tracker"] == ("127.0.0.1:1", f"{config} [peer]")
    assert rows["--label"] == ("from-seed", f"{config} [seed]")  # a command's own section wins over [peer]
    assert rows["--max-upload-connections"] == ("64", f"{config} [seed]")
    assert rows["--port"] == ("0", "default")
    tracker = _run("--config", str(config), "config", "tracker").output
    assert "7171" in tracker and f"{config} [tracker]" in tracker
    assert "/tmp/elsewhere.db" in tracker  # --db: spelled as on the command line, not as its parameter (db_path)
    env = _run("--config", str(config), "config", "ls", env={"CHUNKSWARM_TRACKER": "10.1.2.3:9"}).output
    assert "10.1.2.3:9" in env and "environment CHUNKSWARM_TRACKER" in env


def test_help_shows_the_configured_defaults(config: pathlib.Path) -> None:
    assert "7171" in _run("--config", str(config), "tracker", "--help").output


def test_the_default_file_is_read_from_the_config_folder(tmp_path: pathlib.Path) -> None:
    folder = tmp_path / "xdg" / "chunkswarm"
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text('[ls]\ntracker = "127.0.0.1:4"\n')
    result = _run("ls", env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert "127.0.0.1:4 unreachable" in result.output
    # None there is fine: the built-in defaults.
    assert _run("config", "ls", env={"XDG_CONFIG_HOME": str(tmp_path / "empty")}).exit_code == 0


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[seed\n", "is not valid TOML"),
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ("[seed]\nbogus = 1\n", "[seed] has no setting 'bogus'"),
        ("[seed]\nport = 1\n", None),
        ("[ls]\nport = 1\n", "[ls] has no setting 'port'"),  # ls serves nothing: it has no --port
        ("[seed]\nmax-upload-connections = \"many\"\n", "max-upload-connections"),
        ("[seed]\nmax-upload-connections = 0\n", "max-upload-connections"),
        ("[peer]\nlabel = [1, 2]\n", "must be a single value"),
        ("[peer]\ntracker = [\"a:1\", \"b:2\"]\n", None),  # trackers sharing one swarm, tried in turn
        ("seed = 1\n", "must be a table"),
    ],
)
def test_a_bad_file_is_refused_with_where_it_is_wrong(tmp_path: pathlib.Path, text: str, error: str | None) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    result = _run("--config", str(path), "config")
    if error is None:
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 1 and str(path) in result.output and error in result.output, result.output


def test_an_explicit_file_must_exist(tmp_path: pathlib.Path) -> None:
    result = _run("--config", str(tmp_path / "missing.toml"), "config")
    assert result.exit_code == 1 and "no configuration file at" in result.output
