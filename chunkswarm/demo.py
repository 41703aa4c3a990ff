"""The scenario behind ``demo.py``: a real tracker and real peers on loopback, swarming one file.

::

    tracker (port 0, short heartbeats)
    peer-1 .. peer-k    uploaders: each copies the file into its own share directory and publishes it
    peer-k+1 .. peer-n  downloaders: all download it at once, from the uploaders and from each other

Nothing here touches the protocol: the peers are :func:`peer.node.open_peer`
peers and the tracker is :func:`tracker.server.serve_tracker`, exactly as the
``chunkswarm`` commands run them. This module only arranges directories,
starts the downloads together and checks the copies afterwards.
"""

from __future__ import annotations

import hashlib
import logging
import pathlib
import shlex
import shutil
import signal
import sys
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager

import attrs
import trio
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from chunkswarm.ui import LogProgress, RichProgress, markup_safe, progress_columns
from common.address import format_address
from common.errors import ChunkswarmError
from common.manifest import chunk_size_for
from common.wording import format_rate, format_size, plural
from peer.config import PeerConfig
from peer.gateway import GatewayConfig, serve_gateway
from peer.node import Peer, open_peer
from peer.progress import DownloadResult, ProgressSink
from peer.tasks import open_nursery
from tracker.config import TrackerConfig
from tracker.service import RunningTracker, serve_tracker

__all__ = ["DemoConfig", "DemoOutcome", "PeerReport", "run_demo", "summary_table"]

logger = logging.getLogger("demo")

#: Above this many chunks a download logs its chunks at DEBUG, not one INFO line each.
CHUNK_LOG_LIMIT = 512


def _at_least_two(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 2:
        raise ValueError(f"a swarm needs at least 2 peers (one uploader, one downloader), got {value}")


@attrs.frozen
class DemoConfig:
    """What ``demo.py`` asks for; ``chunk_size=None``: the size every publisher uses (``chunk_size_for``, the sample: 1 KiB)."""

    source: pathlib.Path = attrs.field(converter=pathlib.Path)
    peers: int = attrs.field(default=4, validator=_at_least_two)
    chunk_size: int | None = None
    #: Keep the temporary folder (shares, downloads, peer state) instead of removing it.
    keep: bool = False
    #: After the scenario, keep the tracker and peers up until Ctrl-C.
    keep_running: bool = False
    #: The command printed for joining with ``--keep-running`` (``--tracker HOST:PORT`` is appended).
    join_command: tuple[str, ...] = ()
    heartbeat_interval: float = 1.0
    #: Requests an uploader queues per connection; beyond that it answers BUSY.
    uploader_queue: int = 1
    #: Each uploader sends the whole file in no less than this (its upload rate is the file's size
    #: over it): seeders with little upload capacity, as in a real swarm. Without a limit, loopback
    #: serves a small file within the downloaders' first holder refresh, before either holds a
    #: chunk the other could take, and the downloaders never trade. (0.5 s was too short once
    #: each downloader took the holders in an order of its own: in 2 of 5 runs they traded nothing.)
    upload_seconds: float = 1.0
    #: Serve the tracker's web UI (a free port on 127.0.0.1), and print its URL.
    web: bool = True

    @property
    def uploaders(self) -> int:
        return self.peers // 2

    @property
    def downloaders(self) -> int:
        return self.peers - self.uploaders


@attrs.frozen
class PeerReport:
    """One row of the summary: what a peer moved and whether its copy is right."""

    label: str
    role: str
    address: str
    chunks_uploaded: int
    chunks_downloaded: int
    #: Chunks received per source peer label, most first.
    sources: tuple[tuple[str, int], ...]
    copy: pathlib.Path
    copy_matches: bool
    #: Why the download failed, for a downloader that did not finish.
    error: str = ""


@attrs.frozen
class DemoOutcome:
    source: pathlib.Path
    sha256: str
    size: int
    chunk_size: int
    chunk_count: int
    workdir: pathlib.Path
    peers: tuple[PeerReport, ...]

    @property
    def problems(self) -> list[str]:
        """One sentence per downloader whose copy is missing or differs; empty means success."""
        found = []
        for report in self.peers:
            if report.error:
                found.append(f"{report.label} did not finish: {report.error}")
            elif not report.copy_matches:
                found.append(f"{report.label}'s copy at {report.copy} does not match {self.source.name}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


def _sha256(path: pathlib.Path) -> str | None:
    """Blocking: the hex SHA-256 of ``path``, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _short(source: str) -> str:
    """``peer-1 (127.0.0.1:40123)`` -> ``peer-1``."""
    return source.split(" (")[0]


class _Labelled:
    """A progress sink whose bar is titled with the downloading peer's label."""

    def __init__(self, label: str, inner: ProgressSink) -> None:
        self._label, self._inner = label, inner

    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        self._inner.started(f"{self._label} {name}", total_bytes, already_have_bytes)

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        self._inner.chunk(index, nbytes, source_label)

    def peers(self, count: int) -> None:
        self._inner.peers(count)

    def hashing(self, name: str, total_bytes: int, hashed_bytes: int) -> None:
        self._inner.hashing(f"{self._label} {name}", total_bytes, hashed_bytes)

    def finished(self) -> None:
        self._inner.finished()


@contextmanager
def _progress_bars(console: Console, labels: list[str]) -> Iterator[dict[str, ProgressSink]]:
    """One bar per downloader on a terminal (log lines above them); one log line a second elsewhere."""
    if not console.is_terminal:
        yield {label: _Labelled(label, LogProgress()) for label in labels}
        return
    # The same console as the log's RichHandler (demo.py passes it): log lines go above the bars.
    with Progress(*progress_columns("sources"), console=console) as progress:
        yield {label: _Labelled(label, RichProgress(progress)) for label in labels}


@attrs.define(eq=False)
class _DemoPeer:
    peer: Peer
    role: str
    share_dir: pathlib.Path
    download_dir: pathlib.Path
    result: DownloadResult | None = None
    error: str = ""


async def run_demo(config: DemoConfig, console: Console) -> DemoOutcome:
    """Run the whole scenario; the temporary folder is removed afterwards unless ``config.keep``.

    SIGINT/SIGTERM stop everything cleanly (peers deregister, the tracker
    closes): during the scenario :class:`KeyboardInterrupt` is raised once
    all is closed; with ``keep_running``, after the summary, the outcome is
    returned as usual.
    """
    source = config.source
    size = source.stat().st_size
    chunk_size = config.chunk_size or chunk_size_for(size)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="chunkswarm-demo-"))
    outcomes: list[DemoOutcome] = []
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope)
                hb = config.heartbeat_interval
                web_host = "127.0.0.1" if config.web else None
                tracker_config = TrackerConfig(port=0, db_path=None, heartbeat_interval=hb, peer_timeout=3 * hb, idle_timeout=4 * hb, http_host=web_host)
                tracker: RunningTracker = await nursery.start(serve_tracker, tracker_config)
                if tracker.http_url is not None:
                    console.print(f"Watch the swarm in a browser: {tracker.http_url}", highlight=False)
                await _swarm(config, console, (tracker.host, tracker.port), workdir, chunk_size, outcomes, tracker.http_url)
                nursery.cancel_scope.cancel()
    finally:
        if config.keep:
            console.print(f"kept the demo's folder: {workdir}", highlight=False)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not outcomes:  # interrupted before the summary: the scenario was cut short
        raise KeyboardInterrupt
    return outcomes[0]


async def _stop_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        logger.info("%s received: stopping the peers and the tracker", signal.Signals(signum).name)
        scope.cancel()
        return


async def _swarm(
    config: DemoConfig, console: Console, tracker: tuple[str, int], workdir: pathlib.Path, chunk_size: int, outcomes: list[DemoOutcome],
    web_url: str | None = None,
) -> None:
    """The scenario; its outcome is appended to ``outcomes`` (so that it survives a Ctrl-C during ``keep_running``)."""
    source = config.source
    size = source.stat().st_size
    chunk_count = max(1, -(-size // chunk_size))
    chunk_log_level = logging.INFO if chunk_count <= CHUNK_LOG_LIMIT else logging.DEBUG
    original = await trio.to_thread.run_sync(_sha256, source)
    assert original is not None  # stat() above succeeded
    logger.info(
        "%s: %s in %s of %s; %s, %s",
        source.name, format_size(size), plural(chunk_count, "chunk"), format_size(chunk_size),
        plural(config.uploaders, "uploader"), plural(config.downloaders, "downloader"),
    )  # fmt: skip
    logger.info("each uploader sends at most %s (the file in %.1f s) and answers BUSY beyond %s per downloader, "
                "so the downloaders also fetch chunks from each other",
                format_rate(max(size, chunk_size) / config.upload_seconds), config.upload_seconds,
                plural(config.uploader_queue, "queued request"))  # fmt: skip
    if chunk_log_level == logging.DEBUG:
        logger.info("%d chunks per download: chunk lines are logged at DEBUG; watch the bars instead", chunk_count)

    async with AsyncExitStack() as stack:
        members: list[_DemoPeer] = []
        for number in range(1, config.peers + 1):
            label = f"peer-{number}"
            home = workdir / label
            role = "uploader" if number <= config.uploaders else "downloader"
            peer_config = PeerConfig(
                tracker=tracker,
                state_dir=home / "state",
                label=label,
                chunk_size=chunk_size,
                chunk_log_level=chunk_log_level,
                refresh_interval=0.02,
                announce_delay=0.02,
                stall_timeout=5.0,
                request_timeout=5.0,
                peer_retry_delay=0.5,
                shutdown_timeout=1.0,
            )
            if role == "uploader":
                rate = max(size, chunk_size) / config.upload_seconds
                peer_config = attrs.evolve(peer_config, max_queued_requests=config.uploader_queue, max_upload_rate=rate)
            peer = await stack.enter_async_context(open_peer(peer_config))
            members.append(_DemoPeer(peer, role, home / "share", home / "downloads"))
            if number == 1:  # peer-1 also serves files over HTTP (seed --http): started before REGISTER, which tells the tracker
                services = await stack.enter_async_context(trio.open_nursery())
                stack.callback(services.cancel_scope.cancel)
                gateway = await services.start(serve_gateway, peer, GatewayConfig(home / "gateway"))
                gateway_url = f"http://{format_address(*gateway)}/files/{urllib.parse.quote(source.name)}"
            await peer.connect()
            logger.info("%s (%s) serving chunks on %s", label, role, format_address(*peer.listen_address))
        logger.info("peer-1's HTTP gateway serves the file (and fetches any other from the swarm): %s", gateway_url)

        uploaders = [m for m in members if m.role == "uploader"]
        downloaders = [m for m in members if m.role == "downloader"]
        for member in uploaders:
            member.share_dir.mkdir(parents=True)
            await trio.to_thread.run_sync(shutil.copyfile, source, member.share_dir / source.name)
            await member.peer.publish([member.share_dir])

        with _progress_bars(console, [m.peer.label for m in downloaders]) as sinks:

            async def download(member: _DemoPeer) -> None:
                try:
                    member.result = await member.peer.download(source.name, member.download_dir, progress=sinks[member.peer.label])
                except ChunkswarmError as exc:
                    member.error = str(exc)
                    logger.error("%s: download failed: %s", member.peer.label, exc)

            async with trio.open_nursery() as downloads:
                for member in downloaders:
                    downloads.start_soon(download, member)

        reports = []
        for member in members:
            copy = (member.share_dir if member.role == "uploader" else member.download_dir) / source.name
            digest = await trio.to_thread.run_sync(_sha256, copy)
            status = member.peer.status()
            sources = sorted(((_short(name), count.chunks) for name, count in status.downloaded.items()), key=lambda item: (-item[1], item[0]))
            reports.append(PeerReport(
                label=member.peer.label,
                role=member.role,
                address=format_address(*member.peer.listen_address),
                chunks_uploaded=sum(count.chunks for count in status.uploaded.values()),
                chunks_downloaded=sum(count.chunks for count in status.downloaded.values()),
                sources=tuple(sources),
                copy=copy,
                copy_matches=digest == original,
                error=member.error,
            ))  # fmt: skip
        outcome = DemoOutcome(source, original, size, chunk_size, chunk_count, workdir, tuple(reports))
        outcomes.append(outcome)
        console.print(summary_table(outcome))
        if config.keep_running:
            _print_join_command(config, console, tracker, web_url)
            console.print(f"Or fetch the file over HTTP, through peer-1's gateway:\n\n    curl -O {gateway_url}\n", highlight=False, soft_wrap=True)
            await trio.sleep_forever()


def summary_table(outcome: DemoOutcome) -> Table:
    """For each peer: its role, chunks uploaded and downloaded (and from whom), and whether its copy matches."""
    table = Table(title=f"{markup_safe(outcome.source.name)}: {format_size(outcome.size)}, {plural(outcome.chunk_count, 'chunk')}, "
                        f"SHA-256 {outcome.sha256[:16]}…")
    for column, justify in (("peer", "left"), ("role", "left"), ("address", "left"), ("chunks up", "right"),
                            ("chunks down", "right"), ("downloaded from", "left"), ("copy", "left")):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for report in outcome.peers:
        sources = ", ".join(f"{label}: {count}" for label, count in report.sources) or "-"
        if report.copy_matches:
            verdict = "[green]SHA-256 matches[/]"
        elif report.error:
            verdict = "[red]incomplete[/]"
        else:
            verdict = "[red]SHA-256 differs[/]"
        table.add_row(Text(report.label), report.role, report.address, str(report.chunks_uploaded), str(report.chunks_downloaded), Text(sources),
                      verdict)  # fmt: skip
    return table


def _print_join_command(config: DemoConfig, console: Console, tracker: tuple[str, int], web_url: str | None = None) -> None:
    address = format_address(*tracker)
    command = shlex.join([*(config.join_command or (sys.executable, "demo_peer.py")), "--tracker", address])
    console.print(f"\nThe tracker ({address}) and {config.peers} peers keep running. Join the swarm from another terminal:\n", highlight=False)
    console.print(f"    {command}\n", style="bold", highlight=False, soft_wrap=True)
    if web_url is not None:
        console.print(f"Watch it in a browser (search, holders, live stats): {web_url}\n", highlight=False)
    console.print("Press Ctrl-C to stop everything.", highlight=False)
