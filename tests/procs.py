"""Real processes for end-to-end tests: a tracker, ``peer seed``/``peer get``, the lying peer.

Every child's stderr is drained into :attr:`Child.output` (so it never blocks
on a full pipe), and tests wait for log lines or files with deadlines rather
than sleeping. :func:`rss_peak` reads a child's peak resident memory.
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

__all__ = ["ROOT", "Child", "spawn", "start_tracker", "peer_args", "wait_until", "rss_kib", "rss_peak_kib", "part_state"]

ROOT = pathlib.Path(__file__).resolve().parent.parent


class Child:
    """A subprocess whose stderr is collected (and drained, so it never blocks)."""

    def __init__(self, process: trio.Process, name: str = "") -> None:
        self.process = process
        self.name = name
        self.output = bytearray()
        self._grew = trio.Event()
        self.drained = trio.Event()
        #: Peak resident memory seen so far (KiB), sampled while the child runs.
        self.peak_rss_kib = 0

    async def drain(self) -> None:
        assert self.process.stderr is not None
        try:
            while data := await self.process.stderr.receive_some(65536):
                self.output += data
                self._grew.set()
                self._grew = trio.Event()
        finally:
            self.drained.set()
            self._grew.set()

    async def sample_memory(self) -> None:
        while self.process.poll() is None:
            self.peak_rss_kib = max(self.peak_rss_kib, rss_peak_kib(self.process.pid))
            await trio.sleep(0.05)

    @property
    def text(self) -> str:
        """The log so far, with runs of whitespace as one space (rich wraps long lines)."""
        return re.sub(r"\s+", " ", self.output.decode(errors="replace"))

    async def wait_for(self, pattern: str) -> re.Match[str]:
        """The first match of the regular expression ``pattern`` in the log (waits for it; fails if the child exits first)."""
        regex = re.compile(pattern)
        while True:
            found = regex.search(self.text)
            if found:
                return found
            if self.drained.is_set():
                raise AssertionError(f"{self.name or 'child'} exited before logging {pattern!r}:\n{self.text}")
            await self._grew.wait()

    async def wait_for_text(self, text: str) -> None:
        await self.wait_for(re.escape(text))

    async def wait_exit(self) -> int:
        code = await self.process.wait()
        with trio.move_on_after(5):
            await self.drained.wait()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def address(self, pattern: str = r"serving on (127\.0\.0\.1):(\d+)") -> tuple[str, int]:
        found = re.search(pattern, self.text)
        assert found, self.text
        return found.group(1), int(found.group(2))


@asynccontextmanager
async def spawn(
    nursery: trio.Nursery, *args: str, name: str = "", nice: int = 0, cwd: pathlib.Path = ROOT
) -> AsyncIterator[Child]:
    """``python ARGS...`` from ``cwd``, the repository root by default (at ``nice`` priority); SIGKILLed (if still running) and reaped on exit.

    Python puts ``cwd`` first on the module path of ``-m``: another checkout's
    packages run instead of the installed ones (tests/test_compat.py).
    """
    process = await trio.lowlevel.open_process(
        [sys.executable, *args], cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "250"}, preexec_fn=(lambda: os.nice(nice)) if nice else None,
    )
    proc = Child(process, name)
    nursery.start_soon(proc.drain)
    nursery.start_soon(proc.sample_memory)
    try:
        yield proc
    finally:
        proc.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await process.wait()


@asynccontextmanager
async def start_tracker(nursery: trio.Nursery, db: pathlib.Path, *extra: str, port: int = 0) -> AsyncIterator[tuple[Child, int]]:
    """``python -m chunkswarm tracker`` on ``port`` (0: any); yields the child and the port it logged."""
    async with spawn(nursery, "-m", "chunkswarm", "tracker", "--port", str(port), "--db", str(db), *extra, name="tracker") as child:
        found = await child.wait_for(r"tracker listening on 127\.0\.0\.1:(\d+)")
        yield child, int(found.group(1))


def peer_args(tracker_port: int, state: pathlib.Path, label: str) -> list[str]:
    return ["--tracker", f"127.0.0.1:{tracker_port}", "--state-dir", str(state), "--label", label]


async def wait_until(condition: Callable[[], bool], *, poll: float = 0.02) -> None:
    """Poll ``condition`` until it holds; the caller bounds the wait with ``trio.fail_after``."""
    while not condition():
        await trio.sleep(poll)


def _status_kib(pid: int, field: str) -> int:
    try:
        text = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def rss_kib(pid: int) -> int:
    """Current resident memory of ``pid`` in KiB (0 where /proc is not available)."""
    return _status_kib(pid, "VmRSS")


def rss_peak_kib(pid: int) -> int:
    """Peak resident memory of ``pid`` in KiB (0 where /proc is not available)."""
    return _status_kib(pid, "VmHWM")


def part_state(path: pathlib.Path) -> list[list[int]] | None:
    """The ``done`` ranges of a part file's resume state, or None while there is none (or it is being replaced)."""
    import json

    try:
        return list(json.loads(path.read_text())["done"])
    except (OSError, ValueError, KeyError):
        return None
