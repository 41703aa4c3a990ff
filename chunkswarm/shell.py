"""The interactive peer shell behind ``demo_peer.py``.

One peer, one line-oriented shell: the peer's chunk server keeps serving
while the shell waits for a line (read in a worker thread, so trio runs on).
Commands are single letters (``h`` lists them); every command answers with a
line, and every mistake with a one-line explanation, then the shell goes on.

Ctrl-C during a download cancels that download (its part file and resume
state stay, so ``d`` again resumes); at the prompt it only prints a hint.
"""

from __future__ import annotations

import logging
import pathlib
import signal
import time
from collections.abc import Awaitable, Callable

import attrs
import trio
from rich.console import Console

from chunkswarm.ui import file_table, format_size, progress_display
from common.address import format_address
from common.errors import ChunkswarmError
from common.wording import plural
from peer.catalogue import open_catalogue
from peer.config import PeerConfig
from peer.gateway import GatewayConfig, serve_gateway
from peer.node import Peer, open_peer
from peer.storage.download_lock import LOCK_SUFFIX
from peer.storage.library import expand_paths
from peer.storage.part_file import PART_SUFFIX, STATE_SUFFIX

__all__ = ["HELP", "Shell", "ShellConfig", "run_shell"]

logger = logging.getLogger(__name__)

HELP = """\
commands:
  c          connect to the tracker (register, start heartbeats)
  q          disconnect from the tracker (the peer keeps running; c connects again)
  u          upload: publish every file in the share directory
  f [TEXT]   list the files on the network (only names containing TEXT)
  d [NAME]   download a file by name or id prefix (asks when NAME is left out)
  r NAME     remove: unpublish a file this node published, and stop serving it here
  s          status: connection, address, files held, transfers
  h, ?       this help
  x          exit (deregisters first); end of input (Ctrl-D) does the same
Ctrl-C cancels a running download (d again resumes it)."""

#: Files at least this large show hashing progress while ``u`` publishes them.
HASH_PROGRESS_BYTES = 8 * 1024 * 1024


@attrs.frozen
class ShellConfig:
    peer: PeerConfig
    share_dir: pathlib.Path = attrs.field(converter=pathlib.Path)
    download_dir: pathlib.Path = attrs.field(converter=pathlib.Path)
    #: Show a prompt (only when stdin is a terminal: a pipe gets answers only).
    prompt: bool = False
    #: Also serve files over HTTP (``--http``); None: no gateway.
    gateway: GatewayConfig | None = None


#: Reads one line; None at end of input.
Reader = Callable[[str], Awaitable[str | None]]


@attrs.define(eq=False)
class Shell:
    """Parses command lines and runs them against one :class:`Peer`."""

    peer: Peer
    config: ShellConfig
    #: Answers (stdout); logs and progress bars go to ``progress_console`` (stderr).
    out: Console
    progress_console: Console
    read: Reader
    _download: trio.CancelScope | None = attrs.field(init=False, default=None)

    @property
    def tracker(self) -> str:
        return format_address(*self.peer.config.tracker)

    def say(self, text: str) -> None:
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)

    async def handle(self, line: str) -> bool:
        """Run one command line; False means the shell should exit."""
        command, _, argument = line.strip().partition(" ")
        command, argument = command.lower(), argument.strip()
        if not command:
            return True
        if command in ("x", "exit", "quit"):
            return False
        handler = {
            "c": self.connect,
            "q": self.disconnect,
            "u": self.upload,
            "f": self.files,
            "d": self.download,
            "r": self.remove,
            "s": self.status,
            "h": self.help,
            "?": self.help,
        }.get(command)
        if handler is None:
            self.say(f"unknown command {command!r}: type h for help")
            return True
        try:
            await handler(argument)
        except ChunkswarmError as exc:
            self.say(f"error: {exc}")
        except OSError as exc:
            self.say(f"error: {exc.strerror or exc}")
        return True

    async def help(self, _: str) -> None:
        self.say(HELP)

    def _connected(self, before: str) -> bool:
        if self.peer.connected:
            return True
        self.say(f"not connected to the tracker: type c to connect before {before}")
        return False

    # -- tracker membership -----------------------------------------------------
    async def connect(self, _: str) -> None:
        if self.peer.connected:
            self.say(f"already connected to the tracker at {self.tracker}")
            return
        await self.peer.connect()
        where = format_address(*self.peer.listen_address)
        self.say(f"connected to the tracker at {self.tracker} as {self.peer.name}; serving chunks on {where}")

    async def disconnect(self, _: str) -> None:
        if not self.peer.connected:
            await self.peer.disconnect()  # stops a background reconnection, if any
            self.say("not connected to the tracker")
            return
        await self.peer.disconnect()
        self.say(f"disconnected from the tracker at {self.tracker}; still serving chunks (c connects again)")

    # -- files ---------------------------------------------------------------------
    async def upload(self, _: str) -> None:
        if not self._connected("uploading"):
            return
        share = self.config.share_dir
        if not share.is_dir():
            self.say(f"nothing to upload: share directory {share} does not exist")
            return
        paths = await trio.to_thread.run_sync(expand_paths, [share])
        paths = [p for p in paths if not p.name.endswith((PART_SUFFIX, PART_SUFFIX + STATE_SUFFIX, PART_SUFFIX + LOCK_SUFFIX))]
        if not paths:
            self.say(f"nothing to upload: {share} has no files")
            return
        for path in paths:
            if path.stat().st_size >= HASH_PROGRESS_BYTES:
                with progress_display(self.progress_console) as progress:
                    (manifest,) = await self.peer.publish([path], progress=progress)
            else:
                (manifest,) = await self.peer.publish([path])
            self.say(
                f"published {manifest.name} ({format_size(manifest.size)}, {plural(manifest.chunk_count, 'chunk')}, id {manifest.hex_id[:12]})"
            )
        self.say(f"uploaded {plural(len(paths), 'file')} from {share}: the swarm can download them from this peer now")

    async def files(self, pattern: str) -> None:
        if not self._connected("listing files"):
            return
        entries = await self.peer.list_files(pattern)
        if not entries:
            self.say("no files on the network" + (f" with {pattern!r} in their name" if pattern else ""))
            return
        table = file_table(sorted(entries, key=lambda e: e.name), f"{plural(len(entries), 'file')} on the network", id_chars=12)
        self.out.print(table)

    async def download(self, query: str) -> None:
        if not self._connected("downloading"):
            return
        if not query:
            answer = await self.read("file name or id prefix: ")
            query = (answer or "").strip()
            if not query:
                self.say("no file named: nothing downloaded")
                return
        started = time.monotonic()
        with trio.CancelScope() as scope:
            self._download = scope
            try:
                with progress_display(self.progress_console) as progress:
                    result = await self.peer.download(query, self.config.download_dir, progress=progress)
            finally:
                self._download = None
        if scope.cancelled_caught:
            self.say(f"download of {query} cancelled; the part file is kept in {self.config.download_dir}: d {query} resumes it")
            return
        if result.already_complete:
            self.say(f"{result.manifest.name} is already complete at {result.path}, nothing downloaded; serving it")
            return
        # "peer-1 (127.0.0.1:40123)" -> "peer-1"; a peer without a label is named by its address.
        sources = ", ".join(f"{name.split(' (')[0]}: {count.chunks}" for name, count in result.received.items())
        got = f"{plural(result.chunks_received, 'chunk')} from {sources}" if sources else "nothing transferred"
        resumed = f", {result.chunks_resumed} resumed from the part file" if result.chunks_resumed else ""
        self.say(
            f"saved {result.manifest.name} ({format_size(result.manifest.size)}) to {result.path} "
            f"in {time.monotonic() - started:.2f} s ({got}{resumed}); now serving it"
        )

    async def remove(self, query: str) -> None:
        if not self._connected("removing a file"):
            return
        if not query:
            self.say("r takes the name or id prefix of a file this node published: r NAME")
            return
        async with open_catalogue(self.peer.config) as catalogue:
            entry = await self.peer.resolve(query)
            await catalogue.unpublish(entry.file_id)
        served = entry.file_id in self.peer.library.files
        if served:
            self.peer.library.remove(entry.file_id)
        self.say(
            f"unpublished {entry.name} (id {entry.file_id.hex()[:12]}) from the tracker at {self.tracker}"
            + ("; no longer serving it here" if served else "")
        )

    def cancel_download(self) -> bool:
        """Cancel the running download, if any; True when there was one."""
        if self._download is None:
            return False
        self._download.cancel()
        return True

    async def status(self, _: str) -> None:
        peer = self.peer
        status = peer.status()
        where = format_address(*status.listen_address)
        state = "connected to" if status.connected else "not connected to"
        self.say(f"{peer.name}: {state} the tracker at {self.tracker}; serving chunks on {where}")
        self.say(f"files held: {len(status.files)}")
        for name, hex_id, held, count in sorted(status.files):
            self.say(f"  {name}  {held}/{count} chunks  id {hex_id[:12]}")
        up, down = list(status.uploaded.values()), list(status.downloaded.values())
        self.say(
            f"transfers: uploaded {plural(sum(c.chunks for c in up), 'chunk')} ({format_size(sum(c.bytes for c in up))}) "
            f"to {plural(len(up), 'peer')}, downloaded {plural(sum(c.chunks for c in down), 'chunk')} "
            f"({format_size(sum(c.bytes for c in down))}) from {plural(len(down), 'peer')}; "
            f"{plural(status.upload_connections, 'upload connection')} open"
            + (f"; downloading {', '.join(status.active_downloads)}" if status.active_downloads else "")
        )


async def _read_line(prompt: str) -> str | None:
    """One line of stdin from a worker thread (trio keeps serving meanwhile); None at end of input."""
    try:
        return await trio.to_thread.run_sync(input, prompt, abandon_on_cancel=True)
    except EOFError:
        return None


async def _watch_interrupts(shell: Shell, prompt: str) -> None:
    """Ctrl-C cancels the running download; at the prompt it only explains how to leave."""
    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async for _ in signals:
            if shell.cancel_download():
                shell.say("\ncancelling the download ...")
            else:
                shell.say("\n(Ctrl-C cancels downloads; type x or press Ctrl-D to exit)")
                # input() is still waiting in its thread: show its prompt again.
                shell.out.print(prompt, end="", markup=False, highlight=False)


async def run_shell(config: ShellConfig, out: Console, progress_console: Console) -> None:
    """Start the peer and run the shell until ``x`` or end of input; leaving deregisters."""
    try:
        import readline  # noqa: F401  (line editing and history for input(), where available)
    except ImportError:  # pragma: no cover  (Windows)
        pass
    async with open_peer(config.peer) as peer:
        prompt = f"{peer.name}> " if config.prompt else ""

        async def read(question: str) -> str | None:
            return await _read_line(question if config.prompt else "")

        shell = Shell(peer, config, out, progress_console, read)
        shell.say(
            f"{peer.name} serving chunks on {format_address(*peer.listen_address)}; tracker {shell.tracker}; "
            f"share {config.share_dir}; downloads to {config.download_dir}. Type h for help."
        )
        async with trio.open_nursery() as nursery:
            if config.gateway is not None:
                gateway = await nursery.start(serve_gateway, peer, config.gateway)
                shell.say(f"serving files over HTTP: http://{format_address(*gateway)}/files/NAME (a file held here, or fetched from the swarm)")
            nursery.start_soon(_watch_interrupts, shell, prompt)
            while True:
                line = await _read_line(prompt)
                if line is None:
                    if config.prompt:
                        shell.say("")  # end the prompt's line after Ctrl-D
                    break
                if not await shell.handle(line):
                    break
            nursery.cancel_scope.cancel()
        was_connected = peer.connected
        await peer.disconnect()
        shell.say(f"bye: {'deregistered from the tracker, ' if was_connected else ''}{peer.name} stopped")
