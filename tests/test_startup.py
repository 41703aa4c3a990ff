"""What a ``get`` and a ``seed`` process import: what their work needs, and not the rest (issue 16).

Each swarm member is a process of its own, and every module it imports is CPU each one pays at start
(``bench/startup.py`` measures it). Real ``python -m chunkswarm get`` and ``seed`` runs against an
in-process swarm, each writing the names in ``sys.modules`` at exit: none of the heavy modules that
only other commands, options or a terminal need may be among them. No timing is asserted.
"""

from __future__ import annotations

import pathlib
import signal
import sys

import pytest
import trio

from chunkswarm.cli import SUBCOMMANDS
from chunkswarm.entry import DIRECT
from tests.procs import spawn
from tests.test_peer_swarm import Swarm, source, swarm, tracker  # noqa: F401  (fixtures)

#: Modules a get or a seed of plain files, logging to a pipe, has no use for: the web UI and HTTP gateway,
#: LAN discovery, folder watching, SQLite, asyncio, rich (bars and tables on a terminal only), the parsing
#: of keys and certificates (a run-only key is made, never read; TLS only in a private swarm), the
#: configuration file's parser and the group of every command.
HEAVY = (
    "rich",
    "hypercorn",
    "starlette",
    "jinja2",
    "zeroconf",
    "watchfiles",
    "anyio",
    "sqlite3",
    "asyncio",
    "cryptography.x509",
    "cryptography.hazmat.primitives.serialization",
    "tomllib",
    "chunkswarm.cli",
    "chunkswarm.collection_commands",
    "chunkswarm.ui",
    "peer.gateway",
    "peer.collection_transfer",
    "tracker",
)

#: Runs ``python -m chunkswarm ARGS...`` as the command line would, and writes the modules loaded to OUT at exit.
RUNNER = """
import atexit, runpy, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
sys.argv = ["chunkswarm", *sys.argv[2:]]
runpy.run_module("chunkswarm", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(autouse=True)
def no_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    """Children see no configuration file (a developer's own would send them through the group) and no forced terminal."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("CHUNKSWARM_CONFIG", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)


def heavy_in(listing: pathlib.Path, allowed: tuple[str, ...] = ()) -> list[str]:
    """The heavy packages (top-level names, or the ones in HEAVY) loaded by the run that wrote ``listing``, but ``allowed``."""
    loaded = listing.read_text().split()
    assert "chunkswarm.entry" in loaded and "trio" in loaded  # the listing is a real run's
    return sorted({heavy for name in loaded for heavy in HEAVY if (name == heavy or name.startswith(heavy + ".")) and heavy not in allowed})


async def test_a_get_imports_none_of_the_heavy_modules(swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path) -> None:
    listing = tmp_path / "modules.txt"
    with trio.fail_after(60):
        async with swarm.peer() as seeder:
            await seeder.publish([source.parent])
            tracker_address = f"{swarm.tracker[0]}:{swarm.tracker[1]}"
            result = await trio.run_process(
                [sys.executable, "-c", RUNNER, str(listing), "get", source.name, "-o", f"{tmp_path / 'out'}/", "--tracker", tracker_address,
                 "--state-dir", str(tmp_path / "get-state")],
                capture_stdout=True, capture_stderr=True, check=False,
            )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert (tmp_path / "out" / source.name).read_bytes() == source.read_bytes()
    assert heavy_in(listing) == []


@pytest.mark.parametrize("watch", [False, True])
async def test_a_seed_imports_none_of_the_heavy_modules(
    swarm: Swarm, source: pathlib.Path, tmp_path: pathlib.Path, nursery: trio.Nursery, watch: bool
) -> None:
    listing = tmp_path / "modules.txt"
    args = ["-c", RUNNER, str(listing), "seed", str(source), "--tracker", f"{swarm.tracker[0]}:{swarm.tracker[1]}",
            "--state-dir", str(tmp_path / "seed-state"), "--watch" if watch else "--no-watch"]  # fmt: skip
    with trio.fail_after(60):
        async with spawn(nursery, *args, name="seed") as child:
            await child.wait_for(r"seeding data\.bin")
            if watch:
                await child.wait_for(r"watching ")
            # SIGINT rather than SIGTERM: caught (exit 0) or not yet (KeyboardInterrupt, 130), the listing is written either way.
            child.signal(signal.SIGINT)
            assert await child.wait_exit() in (0, 130), child.text
    # A seed reads its node's key from its PEM file; following the folders is what watchfiles (and the anyio it runs on) are for.
    assert heavy_in(listing, allowed=("cryptography.hazmat.primitives.serialization",)) == (["anyio", "watchfiles"] if watch else [])


def test_get_and_seed_start_the_commands_the_group_runs() -> None:
    assert {name: SUBCOMMANDS[name] for name in DIRECT} == DIRECT


@pytest.mark.parametrize("command", sorted(DIRECT))
async def test_a_direct_command_helps_as_through_the_group(command: str, tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    direct = await trio.run_process([sys.executable, "-m", "chunkswarm", command, "-h"], capture_stdout=True)
    # --config before the command's name sends it through the group (chunkswarm/entry.py).
    through_group = await trio.run_process([sys.executable, "-m", "chunkswarm", "--config", str(empty), command, "-h"], capture_stdout=True)
    assert direct.stdout.decode().startswith(f"Usage: python -m chunkswarm {command} [OPTIONS]")
    assert direct.stdout == through_group.stdout
