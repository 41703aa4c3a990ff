"""``chunkswarm get NAME...``: download files from the swarm, one after the other, and say how each went.

Each NAME is a file name, a unique prefix of a file id, or a shell-style
pattern (``'*.iso'``) matched against the names on the tracker. Files are
downloaded one at a time, in the order asked (a pattern's matches by name):
each gets the whole swarm's bandwidth and its own bar, and the first is
usable soonest. ``-o`` names the output file when one NAME (not a pattern)
is asked for and ``-o`` is not an existing directory and does not end with
``/``; otherwise it is the directory. The exit status is 1 if any file
failed, with a summary of the failures.

Ctrl-C keeps what was downloaded in the part file and says how to resume:
the same command again.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import pathlib
import shlex
from typing import Any

import attrs
import click

from chunkswarm.console import setup_logging, stderr_console, terminal_console
from chunkswarm.log_progress import progress_display
from chunkswarm.peer_options import COLLECTION_OPTION, _config, _peer_options, _run, _serve_until_signalled
from common.address import format_address
from common.errors import ChunkswarmError
from common.wording import format_rate, format_size, plural
from peer.config import PeerConfig
from peer.node import Peer, open_peer
from peer.progress import DownloadResult, ProgressSink
from peer.storage.part_file import PART_SUFFIX

__all__ = ["get", "output_target", "is_pattern"]

logger = logging.getLogger("peer")

_PATTERN_CHARS = frozenset("*?[")


def is_pattern(name: str) -> bool:
    """True if ``name`` is a shell-style pattern to match against the tracker's names."""
    return not _PATTERN_CHARS.isdisjoint(name)


def output_target(output: str | None, names: tuple[str, ...]) -> tuple[pathlib.Path, str]:
    """``-o`` as (directory, file name or "" for the file's own name); see the module docstring."""
    if output is None:
        return pathlib.Path("."), ""
    path = pathlib.Path(output)
    one_file = len(names) == 1 and not is_pattern(names[0])
    if not one_file or output.endswith(("/", os.sep)) or path.is_dir():
        return path, ""
    return path.parent, path.name


@attrs.frozen
class _Wanted:
    """One file to download: what to ask the tracker, how to name it to the user, or why it cannot be."""

    query: str
    shown: str
    error: str = ""


async def _expand(peer: Peer, names: tuple[str, ...]) -> list[_Wanted]:
    """NAMEs with their patterns replaced by the files they match (by id: two files may share a name)."""
    if not any(is_pattern(name) for name in names):
        return [_Wanted(name, name) for name in dict.fromkeys(names)]
    entries = sorted(await peer.list_files(""), key=lambda entry: (entry.name, entry.file_id))
    wanted: dict[str, _Wanted] = {}
    for name in names:
        if not is_pattern(name):
            wanted.setdefault(name, _Wanted(name, name))
            continue
        matches = [entry for entry in entries if fnmatch.fnmatchcase(entry.name, name)]
        if not matches:
            wanted.setdefault(name, _Wanted(name, name, f"no file on the tracker matches {name!r}"))
        for entry in matches:
            wanted.setdefault(entry.file_id.hex(), _Wanted(entry.file_id.hex(), entry.name))
    return list(wanted.values())


@attrs.define(eq=False)
class _Tally:
    """A progress sink in front of the display that remembers how far the current file got (for Ctrl-C)."""

    inner: ProgressSink
    out_dir: pathlib.Path
    save_as: str
    name: str = ""
    total: int = 0
    done: int = 0

    @property
    def part_path(self) -> pathlib.Path:
        return self.out_dir / ((self.save_as or self.name) + PART_SUFFIX)

    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        self.name, self.total, self.done = name, total_bytes, already_have_bytes
        self.inner.started(name, total_bytes, already_have_bytes)

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        self.done += nbytes
        self.inner.chunk(index, nbytes, source_label)

    def peers(self, count: int) -> None:
        report = getattr(self.inner, "peers", None)
        if report is not None:
            report(count)

    def hashing(self, name: str, total_bytes: int, hashed_bytes: int) -> None:  # never called by a download
        pass

    def finished(self) -> None:
        self.name = ""  # nothing left in a part file
        self.inner.finished()


@attrs.define(eq=False)
class _GetRun:
    """What one ``get`` did so far: the files finished and failed, and the one under way."""

    out_dir: pathlib.Path
    save_as: str
    finished: list[str] = attrs.field(factory=list)
    failed: list[tuple[str, str]] = attrs.field(factory=list)
    current: _Tally | None = None

    def interrupted(self, resume: str) -> str:
        """The one line Ctrl-C leaves: what was kept, and the command that resumes."""
        tally = self.current
        if tally is None or not tally.name:
            return f"interrupted: no download was under way, nothing kept; run again: {resume}"
        percent = 100 * tally.done / tally.total if tally.total else 100
        return (f"interrupted: kept {format_size(tally.done)} of {format_size(tally.total)} ({percent:.0f}%) of {tally.name} "
                f"in {tally.part_path}; resume with the same command: {resume}")  # fmt: skip


def _summary(result: DownloadResult, shown: str) -> str:
    if result.already_complete:
        return f"{shown}: already complete at {result.path}, nothing downloaded"
    size = format_size(result.bytes_received)
    rate = format_rate(result.bytes_received / result.seconds if result.seconds > 0 else 0.0)
    sources = ", ".join(f"{name.split(' (')[0]}: {count.chunks}" for name, count in result.received.items())
    got = f"{plural(result.chunks_received, 'chunk')} from {sources}" if sources else "no chunk needed"
    resumed = f"; {plural(result.chunks_resumed, 'chunk')} resumed from the part file" if result.chunks_resumed else ""
    return f"{result.manifest.name} -> {result.path} ({size} in {result.seconds:.2f} s, {rate}; {got}{resumed})"


class _RememberArgs(click.Command):
    """Keeps the arguments as given, for the command that resumes an interrupted ``get``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["get.args"] = list(args)
        return super().parse_args(ctx, args)


@click.command(cls=_RememberArgs)
@click.argument("names", nargs=-1, metavar="NAME...")
@click.option("-o", "--output", "--output-dir", "output", default=None, metavar="PATH",
              help="Directory to put the files in (created if needed); with one NAME, a path that is not a directory "
                   "and does not end with / names the output file.  [default: .]")  # fmt: skip
@click.option("--seed", "keep_seeding", is_flag=True, help="Keep serving the files once they are downloaded.")
@click.option("--force", is_flag=True, help="Overwrite an existing different file of that name.")
@click.option("--pipeline-depth", type=click.IntRange(1, 64), default=PeerConfig().pipeline_depth, show_default=True,
              help="Requests in flight per peer connection.")
@click.option("--stall-timeout", type=click.FloatRange(min=0, min_open=True), default=PeerConfig().stall_timeout, show_default=True,
              help="Give up when missing chunks have had no reachable holder for this many seconds.")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=PeerConfig().request_timeout, show_default=True,
              help="Drop a peer that leaves requests unanswered for this many seconds.")
@click.option("--direct-io", is_flag=True,
              help="Write (and with --verify-writes read back) chunks past the page cache (O_DIRECT); every write then waits for the disk.")
@click.option("--verify-writes", is_flag=True,
              help="Read every chunk back after its write and check it (each is hashed before it is written in any case); costs CPU, and memory for the bytes compared.")
@COLLECTION_OPTION
@_peer_options
@click.pass_context
def get(ctx: click.Context, /, names: tuple[str, ...], output: str | None, keep_seeding: bool, force: bool, pipeline_depth: int,
        stall_timeout: float, request_timeout: float, direct_io: bool, verify_writes: bool, collection_name: str | None, log_level: str,
        **options: Any) -> None:  # fmt: skip
    """Download each NAME from the swarm, one after the other (or, with --collection NAME, every file of a collection into -o DIR).

    NAME is a file name, a unique prefix of a file id, or a pattern such as
    '*.iso' (quoted) matched against the names on the tracker. A file is put
    in place only once every chunk is verified; until then it is NAME.part,
    and running the same command again resumes it. While a get downloads a
    file, NAME.part.lock stops a second get of it into the same folder.
    """
    setup_logging(log_level)
    if bool(names) == bool(collection_name):
        raise click.UsageError("give NAME... or --collection NAME (with -o DIR), not both" if names else "give NAME... or --collection NAME")
    config = _config(pipeline_depth=pipeline_depth, stall_timeout=stall_timeout, request_timeout=request_timeout,
                     direct_io=direct_io, verify_writes=verify_writes, **options)  # fmt: skip
    if collection_name:  # every file of the collection's current version, into -o DIR (chunkswarm/collection_commands.py)
        from chunkswarm.collection_commands import get_collection_into

        get_collection_into(config, collection_name, pathlib.Path(output or "."), force=force, keep_seeding=keep_seeding)
        return
    out_dir, save_as = output_target(output, names)
    run = _GetRun(out_dir, save_as)
    try:
        _run(_get, config, names, run, keep_seeding, force)
    except click.exceptions.Exit as stop:
        if stop.exit_code == 130:
            resume = f"{ctx.command_path} {shlex.join(ctx.meta.get('get.args', names))}"
            stderr_console().print(run.interrupted(resume), markup=False, highlight=False, soft_wrap=True)
        raise
    if run.failed:
        if len(run.failed) == 1 and not run.finished:
            raise click.ClickException(run.failed[0][1])
        reasons = "; ".join(f"{shown}: {reason}" for shown, reason in run.failed)
        asked = len(run.failed) + len(run.finished)
        raise click.ClickException(f"{len(run.failed)} of {plural(asked, 'file')} failed ({reasons})")


async def _get(config: PeerConfig, names: tuple[str, ...], run: _GetRun, keep_seeding: bool, force: bool) -> None:
    async with open_peer(config) as peer:
        await peer.connect()
        wanted = await _expand(peer, names)
        for item in wanted:
            if item.error:
                run.failed.append((item.shown, item.error))
                continue
            try:
                with progress_display(terminal_console()) as progress:
                    run.current = _Tally(progress, run.out_dir, run.save_as)
                    result = await peer.download(item.query, run.out_dir, force=force, progress=run.current, save_as=run.save_as)
            except ChunkswarmError as exc:
                run.current = None
                run.failed.append((item.shown, str(exc)))
                if len(wanted) > 1:
                    logger.error("%s: %s", item.shown, exc)
                continue
            run.current = None  # not on Ctrl-C: the line it leaves names the part file
            run.finished.append(item.shown)
            logger.info("%s", _summary(result, item.shown))
        if keep_seeding and run.finished:
            await _serve_until_signalled(peer, f"serving on {format_address(*peer.listen_address)}")  # a bench stops it after this line
