"""The web UI's name search (``tracker/web/names.py``) against a real registry: every path finds what a plain scan finds."""

from __future__ import annotations

import pytest
import trio

from tests.tracker_client_helper import make_manifest
from tracker.registry import Registry
from tracker.searches import SearchLog
from tracker.web import names as names_module
from tracker.web.names import NameSearch


def registry_with(names: list[str]) -> Registry:
    registry = Registry(90.0, lambda: 0.0)
    for name in names:
        registry.publish(make_manifest(name, chunks=1), checked=True)
    return registry


def expected(registry: Registry, query: str) -> list[str]:
    """What the registry's own scan (newest first, case-insensitive) matches."""
    return [summary.manifest.name for summary in registry.list_files(query)]


async def found(search: NameSearch, registry: Registry, query: str) -> list[str]:
    await search.refresh(registry.index)
    records, positions = await search.find(query)
    return [records[i].manifest.name for i in positions]


NAMES = ["Alpha.txt", "beta.TXT", "Gamma Ray.ogg", "straße.pdf", "alphabet soup", "ALPHA-2.bin"]


@pytest.mark.parametrize("query", ["", "alpha", "ALPHA", ".txt", "ray", "STRASSE", "nothing", "a", "\u00df"])
@pytest.mark.parametrize("few", [0, 2000])  # 0: every non-empty query takes the name-by-name path
async def test_it_finds_what_a_scan_finds_newest_first(query: str, few: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(names_module, "FEW", few)
    monkeypatch.setattr(names_module, "SLICE", 2)  # several slices, each followed by a yield
    registry = registry_with(NAMES)
    assert await found(NameSearch(), registry, query) == expected(registry, query)


async def test_it_follows_publishes_and_removals() -> None:
    registry = registry_with(NAMES[:3])
    search = NameSearch()
    assert await found(search, registry, "a") == expected(registry, "a")
    for name in NAMES[3:]:
        registry.publish(make_manifest(name, chunks=1), checked=True)
    assert await found(search, registry, "alpha") == ["ALPHA-2.bin", "alphabet soup", "Alpha.txt"]
    gone = registry.list_files("alphabet")[0].manifest.file_id
    registry.unlist(gone)
    assert await found(search, registry, "alpha") == ["ALPHA-2.bin", "Alpha.txt"]
    assert len(search.records) == 5


async def test_id_prefixes_merge_with_name_matches_once_each() -> None:
    registry = registry_with(NAMES)
    target = registry.list_files("gamma")[0]
    prefix = target.manifest.hex_id[:8]
    search = NameSearch()
    await search.refresh(registry.index)
    by_id, _ = registry.index.find(prefix, 100)
    records, positions = await search.find(prefix, by_id)
    assert [records[i].manifest.name for i in positions] == ["Gamma Ray.ogg"]
    records, positions = await search.find("a", by_id)  # already a name match: listed once
    assert [records[i].manifest.name for i in positions] == expected(registry, "a")


async def test_a_search_yields_to_other_tasks_between_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(names_module, "FEW", 0)
    monkeypatch.setattr(names_module, "SLICE", 1)
    registry = registry_with(NAMES)
    search = NameSearch()
    await search.refresh(registry.index)
    ticks = 0

    async def other() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()
        before = ticks
        await search.find("a")
        assert ticks - before >= len(NAMES) - 1
        nursery.cancel_scope.cancel()


def test_the_search_log_keeps_the_newest_entries_only() -> None:
    log = SearchLog(size=3, clock=iter(range(100)).__next__)
    for i in range(5):
        log.record(f"q{i}" + "x" * 500, i, "web")
    assert [(s.at, s.pattern[:2], s.results) for s in log.recent()] == [(4, "q4", 4), (3, "q3", 3), (2, "q2", 2)]
    assert len(log) == 3 and log.total == 5 and len(log.recent(1)[0].pattern) == 120
