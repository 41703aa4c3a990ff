"""Which file-system events call for a scan: not those of the engine's own writes (blocking; run in a worker thread).

The watcher sees every file the engine writes into the folder (another
node's changes taken here): 10,000 files fetched are hundreds of events,
each of which used to mean a scan of the whole folder, hashing nothing (the
index already has every stat) but listing every file each time.
:func:`needs_scan` answers, for the paths of one batch of events, whether any
of them differs from what the index records: a file whose stat is the one
recorded (the same test a scan makes before it hashes), a path gone that the
index does not hold, a folder every file below which is as recorded. Anything
else (a file changed, a new one, a link, a folder with a file unknown) needs a
scan. The engine asks only once the writes in flight to those paths are
recorded (:class:`~peer.sync.apply.Applier` ``writing``), so its own write is
never mistaken for a change, nor a change for its own write.
"""

from __future__ import annotations

import os
import pathlib
import stat as stat_module
from collections.abc import Callable, Iterable, Mapping

import trio
import watchfiles

from common.sync_rules import STATE_FOLDER
from peer.sync.apply import Applier
from peer.sync.fsops import Stat, is_temporary
from peer.sync.index import Index
from peer.sync.scan import holds_any

__all__ = ["examine", "holds_any", "holds_more", "needs_scan", "relative_of", "watch_folder"]


async def watch_folder(folder: pathlib.Path, debounce: float, index: Index, applier: Applier,
                       wake: Callable[[set[str] | None], None]) -> None:  # fmt: skip
    """Call ``wake`` with the relative paths of file-system events (``watchfiles``, debounced) that change the folder.

    None instead of the paths when an event is not for a path below the folder (the folder itself).
    """
    root = str(folder)
    state = os.path.join(root, STATE_FOLDER)

    def interesting(change: watchfiles.Change, path: str) -> bool:
        # Called for every event (this node's own writes too, thousands a second): plain string tests.
        return not (path == state or path.startswith(state + os.sep) or is_temporary(path))

    async for changes in watchfiles.awatch(root, watch_filter=interesting, debounce=int(debounce * 1000), step=10, recursive=True,
                                           yield_on_timeout=False):  # fmt: skip
        # This node's own writes (others' changes taken) are events too: no scan for those.
        paths = {path for _change, path in changes}
        relatives = {relative for path in paths if (relative := relative_of(root, path)) is not None}
        for _ in range(3):  # again if a batch of writes started meanwhile (its files are not recorded yet)
            await applier.settled(relatives)
            batches = applier.batches
            changed, gone, seen = await trio.to_thread.run_sync(examine, folder, index.stats, paths)
            changed = changed or holds_any(index.stats, gone) or holds_more(index.stats, seen)
            if not changed or batches == applier.batches:
                break
        if changed:
            wake(relatives if len(relatives) == len(paths) else None)


def relative_of(root: str, path: str) -> str | None:
    """``path`` (as the watcher reports it) relative to ``root``, with ``/``; None for the root itself or a path outside."""
    if not path.startswith(root + os.sep):
        return None
    relative = path[len(root) + 1 :]
    return relative.replace(os.sep, "/") if os.sep != "/" else relative


def needs_scan(root: pathlib.Path, stats: Mapping[str, Stat], paths: Iterable[str]) -> bool:
    """True unless every path (absolute) is as ``stats`` (the index's, by relative path) records it; see the module docstring.

    :func:`examine` and :func:`holds_any` in one call: for a ``stats`` nobody changes meanwhile.
    """
    changed, gone, seen = examine(root, stats, paths)
    return changed or holds_any(stats, gone) or holds_more(stats, seen)


def examine(root: pathlib.Path, stats: Mapping[str, Stat], paths: Iterable[str]) -> tuple[bool, list[str], dict[str, int]]:
    """Whether a path differs from ``stats``; the paths gone that ``stats`` holds no file at (folders of it, perhaps);
    and for each folder among the paths, the number of files found below it, each as ``stats`` records it.

    It only looks paths up in ``stats``, never iterates it: a worker thread may run it on the index the
    event loop keeps changing; :func:`holds_any` and :func:`holds_more` (on the loop) say whether those gone
    paths were folders of it, and whether those folders lack files it records (a folder moved out, another made).
    """
    gone: list[str] = []
    seen: dict[str, int] = {}
    for path in paths:
        relative = relative_of(str(root), path)
        if relative is None:
            return True, gone, seen
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if relative in stats:
                return True, gone, seen  # a file the index holds is gone
            gone.append(relative)
            continue
        except OSError:
            return True, gone, seen
        if stat_module.S_ISREG(st.st_mode):
            if stats.get(relative) != Stat.of(st):
                return True, gone, seen
            continue
        if relative in stats:
            return True, gone, seen  # a file the index holds, a folder now (removed, and a folder made at its name)
        found = _folder_files(pathlib.Path(path), relative, stats) if stat_module.S_ISDIR(st.st_mode) else None
        if found is None:
            return True, gone, seen
        seen[relative] = found
    return False, gone, seen


def holds_more(stats: Mapping[str, Stat], seen: Mapping[str, int]) -> bool:
    """Whether ``stats`` records more files below any folder of ``seen`` than were found there (:func:`examine`).

    A folder of the index moved out and another (or an empty one) made at its name is one event, for the
    folder: every file found below it is as recorded, but some recorded are not there.
    """
    if not seen:
        return False
    counts = dict.fromkeys(seen, 0)
    for known in stats:
        folder = known
        while "/" in folder:
            folder = folder.rpartition("/")[0]
            if folder in counts:
                counts[folder] += 1
    return any(counts[folder] > found for folder, found in seen.items())


def _folder_files(folder: pathlib.Path, relative: str, stats: Mapping[str, Stat]) -> int | None:
    """The number of files below ``folder``, if each is as recorded (temporary files of writes in progress aside); else None."""
    files = 0
    stack = [(folder, relative)]
    while stack:
        here, prefix = stack.pop()
        if prefix == STATE_FOLDER:
            continue
        try:
            entries = list(os.scandir(here))
        except OSError:
            return None
        for entry in entries:
            if is_temporary(entry.name):
                continue
            name = f"{prefix}/{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # gone since the listing: its own event follows
            except OSError:
                return None
            if stat_module.S_ISDIR(st.st_mode):
                stack.append((pathlib.Path(entry.path), name))
            elif not stat_module.S_ISREG(st.st_mode) or stats.get(name) != Stat.of(st):
                return None
            else:
                files += 1
    return files
