"""Progress display and tables: the engine's progress events as rich bars on a terminal, log lines elsewhere.

The engine never imports rich: it calls a :class:`~peer.progress.ProgressSink`,
and this module shows what it is told.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.table import Table
from rich.text import Text

from chunkswarm.log_progress import LogProgress, progress_display, short_source
from common.manifest import shown_name
from common.messages import FileEntry, TorrentEntry
from common.wording import format_rate, format_size, plural

__all__ = ["RichProgress", "LogProgress", "RateColumn", "BytesColumn", "progress_columns", "progress_display", "format_size", "file_table",
           "chunk_size_text", "markup_safe", "STALLED_AFTER"]  # fmt: skip


def markup_safe(text: str) -> str:
    """``text`` (a file name, a peer's agent) for a place rich reads as markup: ``[reverse]`` shows as typed, invisible characters as ``\\uXXXX``."""
    return escape(shown_name(text))


class RichProgress:
    """Bars with filename, bytes, speed, ETA, peer count and chunks per source peer."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._sources: Counter[str] = Counter()
        self._peers = 0
        #: The file being hashed (a bar without peers), or None.
        self._hashing: str | None = None

    def _fields(self) -> dict[str, Any]:
        sources = markup_safe(" ".join(f"{name}:{count}" for name, count in self._sources.most_common(4)))
        return {"peers": self._peers, "sources": sources, "detail": f"{plural(self._peers, 'peer')} {sources}"}

    def started(self, name: str, total_bytes: int, already_have_bytes: int) -> None:
        self._hashing = None
        self._task = self._progress.add_task(markup_safe(name), total=total_bytes, completed=already_have_bytes, moved_at=self._progress.get_time(),
                                             **self._fields())  # fmt: skip

    def hashing(self, name: str, total_bytes: int, hashed_bytes: int) -> None:
        if self._task is None or self._hashing != name:
            self._hashing = name
            self._task = self._progress.add_task(f"hashing {markup_safe(name)}", total=total_bytes, peers=0, sources="", detail="")
        self._progress.update(self._task, completed=hashed_bytes, moved_at=self._progress.get_time())

    def chunk(self, index: int, nbytes: int, source_label: str) -> None:
        self._sources[short_source(source_label)] += 1
        if self._task is not None:
            self._progress.update(self._task, advance=nbytes, moved_at=self._progress.get_time(), **self._fields())

    def peers(self, count: int) -> None:
        self._peers = count
        if self._task is not None:
            self._progress.update(self._task, **self._fields())

    def finished(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            self._progress.update(self._task, completed=task.total)
            if self._hashing is None:
                # Sessions close (and the connected count drops to 0) before the download
                # finishes: a finished bar counts the peers that contributed chunks.
                self._peers = len(self._sources)
                self._progress.update(self._task, **self._fields())
        self._hashing = None


#: Seconds without a byte after which a bar says "stalled" rather than a speed and time left that no longer hold.
STALLED_AFTER = 3.0


class RateColumn(ProgressColumn):
    """Speed and time left in binary units (``1.3 MiB/s 0:00:12``), or ``stalled 7 s`` once no byte has come for a while.

    rich's own speed is an average over the last 30 s, so a bar whose bytes
    stopped would go on showing the last speed and a time left that never
    comes; the sink stamps the task's ``moved_at`` field at each chunk.
    """

    def __init__(self, stalled_after: float = STALLED_AFTER) -> None:
        super().__init__()
        self.stalled_after = stalled_after

    def render(self, task: Task) -> Text:
        if task.finished:
            speed = task.finished_speed or task.speed
            return Text(f"{format_rate(speed)} done" if speed else "done", style="progress.data.speed")
        moved_at = task.fields.get("moved_at")
        idle = task.get_time() - moved_at if moved_at is not None else 0.0
        if idle >= self.stalled_after:
            return Text(f"stalled {idle:.0f} s", style="yellow")
        speed, left = task.speed, task.time_remaining
        if speed is None or left is None:
            return Text("? -:--:--", style="progress.remaining")
        minutes, seconds = divmod(int(left), 60)
        hours, minutes = divmod(minutes, 60)
        return Text(f"{format_rate(speed)} {hours:d}:{minutes:02d}:{seconds:02d}", style="progress.data.speed")


class BytesColumn(ProgressColumn):
    """``1.2/8.8 MiB`` as :func:`format_size` writes sizes (rich's own column says ``624/624 bytes``)."""

    def render(self, task: Task) -> Text:
        total = format_size(task.total) if task.total is not None else "?"
        return Text(f"{format_size(task.completed)}/{total}", style="progress.download")


def progress_columns(detail_field: str = "detail") -> tuple[ProgressColumn | str, ...]:
    """The columns of a download bar: name, bar, percentage, bytes, speed and time left (or "stalled"), ``detail_field``."""
    return (
        TextColumn("[bold blue]{task.description}", justify="right"),
        BarColumn(bar_width=None),
        "[progress.percentage]{task.percentage:>3.1f}%",
        BytesColumn(),
        RateColumn(),
        TextColumn(f"{{task.fields[{detail_field}]}}"),
    )


#: The tracker's counters in the order a reader wants them; others follow by name.
_STATS_ORDER: Final = ("peers", "files", "replicas", "chunk_replicas", "connections", "requests", "uptime_s")


def stats_table(counters: dict[str, int | float], title: str) -> Table:
    """A tracker's counters as a two-column table (a ``_s`` suffix means seconds)."""
    table = Table(title=title)
    table.add_column("counter")
    table.add_column("value", justify="right")
    rank = {name: i for i, name in enumerate(_STATS_ORDER)}
    for name in sorted(counters, key=lambda n: (rank.get(n, len(rank)), n)):
        value = counters[name]
        if name.endswith("_s"):
            table.add_row(Text(name[:-2].replace("_", " ")), f"{value:,.0f} s")
        else:
            table.add_row(Text(name.replace("_", " ")), f"{value:,}")
    return table


def file_table(entries: list[FileEntry], title: str, *, id_chars: int = 16) -> Table:
    """The tracker's files as a table: name, size, id prefix, chunks and their size, live holders, complete copies.

    The chunk size tells apart files of one name and content published with
    other chunk sizes (each its own file id, PROTOCOL.md §4.4).
    """
    table = Table(title=title)
    for column, justify in (("name", "left"), ("size", "right"), ("id", "left"), ("chunks", "right"),
                            ("holders", "right"), ("complete", "right")):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for entry in entries:
        chunks = f"{entry.chunk_count}\u00d7{chunk_size_text(entry.chunk_size)}"  # 73 chunks of 4 KiB: "73 (times sign) 4 KiB"
        table.add_row(Text(shown_name(entry.name)), format_size(entry.size), entry.file_id.hex()[:id_chars], chunks, str(entry.holders),
                      str(entry.complete_copies))  # fmt: skip
    return table


def torrent_table(entries: Sequence[TorrentEntry], title: str) -> Table:
    """The tracker's BitTorrent swarms (PROTOCOL.md §8.12): info-hash, seeders, leechers, completed downloads."""
    table = Table(title=title)
    for column, justify in (("info-hash", "left"), ("seeders", "right"), ("leechers", "right"), ("completed", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for entry in entries:
        table.add_row(entry.info_hash.hex(), f"{entry.seeders:,}", f"{entry.leechers:,}", f"{entry.completed:,}")
    return table


def chunk_size_text(size: int) -> str:
    """``65536`` -> ``64 KiB``: chunk sizes, usually powers of two, exactly when they are whole KiB or MiB."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return format_size(size)
