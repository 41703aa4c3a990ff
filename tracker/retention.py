"""How long the catalogue keeps a file that nobody holds: the retention sweep.

A published file stays listed while some peer holds it. Once none has for
``TrackerConfig.retention`` (30 days by default; 0 keeps files for ever), it
leaves the listings and the database, so a catalogue reflects what can still be
downloaded. The time a file was last held is kept in the store in wall-clock
seconds, since it must survive restarts: each sweep records the files held
now, then drops those unheld since the cut-off. The registry decides on the
event loop which of them are still unheld (a peer may have announced one since
the store was asked), and the store deletes only rows still older than the
cut-off (one published again meanwhile stays).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from common.manifest import Manifest

if TYPE_CHECKING:
    from tracker.service import TrackerService

__all__ = ["retention_loop", "sweep", "sweep_interval"]

log = logging.getLogger(__name__)

#: The longest time between two sweeps.
MAX_SWEEP_INTERVAL = 3600.0


def sweep_interval(retention: float) -> float:
    """A tenth of the retention period, at most an hour: a file outlives it by at most that."""
    return min(retention / 10, MAX_SWEEP_INTERVAL)


async def sweep(service: TrackerService) -> list[Manifest]:
    """One sweep: record what is held now, drop what nobody has held for the retention period; what was dropped."""
    store, registry = service.store, service.registry
    await trio.to_thread.run_sync(store.touch, registry.held_files())
    cutoff = store.clock() - service.config.retention
    stale = await trio.to_thread.run_sync(store.unheld_since, cutoff)
    dropped = registry.drop_unheld(stale)
    for manifest in dropped:
        service.publishers.forget(manifest)
    if dropped:
        await trio.to_thread.run_sync(lambda: store.delete([m.file_id for m in dropped], unheld_since=cutoff))
        days = service.config.retention / 86400
        for manifest in dropped:
            log.info("file %r (%s) left the catalogue: no peer has held it for %g days", manifest.name, manifest.hex_id[:16], days)
    return dropped


async def retention_loop(service: TrackerService) -> None:
    """Sweep every :func:`sweep_interval`, the first time once the peers have had a peer timeout to announce again."""
    retention = service.config.retention
    if not retention:
        return
    # After a restart every file looks unheld until its peers are back: give them a peer timeout.
    await trio.sleep(max(service.config.peer_timeout, sweep_interval(retention)))
    while True:
        await sweep(service)
        await trio.sleep(sweep_interval(retention))
