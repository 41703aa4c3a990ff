"""The peer's configuration: one frozen attrs object, built by the CLI (or a demo) and passed down."""

from __future__ import annotations

import logging
import pathlib

import attrs
import platformdirs

from common.allow import AllowList
from common.identity import NodeKey
from common.manifest import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from common.swarm import SwarmFile

__all__ = ["PeerConfig", "default_state_dir"]


def default_state_dir() -> pathlib.Path:
    """The per-user data directory where peers keep manifests and identity by default."""
    return platformdirs.user_data_path("chunkswarm", appauthor=False)


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


@attrs.frozen
class PeerConfig:
    """Everything a peer needs to know; nothing reads the environment below the CLI."""

    tracker: tuple[str, int] = ("127.0.0.1", 7070)
    #: Further trackers of the same swarm (``--tracker A --tracker B``): when the one in use fails, the next is used.
    fallback_trackers: tuple[tuple[str, int], ...] = ()
    listen_host: str = "127.0.0.1"
    listen_port: int = attrs.field(default=0, validator=attrs.validators.and_(attrs.validators.ge(0), attrs.validators.le(65535)))
    state_dir: pathlib.Path = attrs.field(factory=default_state_dir, converter=pathlib.Path)
    #: This node's long-lived key (its node id is the key's): the app loads it from the state
    #: folder; a peer built without one (a test, a library user) gets a fresh key.
    node_key: NodeKey = attrs.field(factory=NodeKey.generate, eq=False, repr=False)
    #: A private swarm (``peer/secure.py``): TLS and the proof of membership on every connection. None: open.
    swarm: SwarmFile | None = None
    #: Only these address ranges are served, and connected to as holders (``--allow``); empty: any.
    allow: AllowList = attrs.field(factory=AllowList)
    #: A human name such as "peer-1": sent as the HELLO/WELCOME agent and used in logs.
    label: str = ""
    #: Chunk size of the files this peer publishes. None (the default): ``chunk_size_for`` each
    #: file's size, as every publisher does (PROTOCOL.md §4.4), so the same bytes get the same id.
    chunk_size: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.and_(attrs.validators.ge(MIN_CHUNK_SIZE), attrs.validators.le(MAX_CHUNK_SIZE))),
    )
    #: Level of the one-line-per-received-chunk log (the demo sets INFO).
    chunk_log_level: int = logging.DEBUG

    # -- serving ------------------------------------------------------------
    #: The files served are checked for changes on disk this often (a ``stat`` each); one
    #: that changed is no longer served, and the tracker is told (``peer.withdrawals``).
    change_check_interval: float = attrs.field(default=1.0, validator=_positive)
    #: Connections served at once; more are told BUSY and closed, unless one IP (one IPv6 /64)
    #: holds more of them than the newcomer's: then its oldest connection makes room.
    max_upload_connections: int = 32
    #: Connections served at once from one IP (one IPv6 /64): half the slots, so that one client
    #: cannot hold them all, and a swarm of 17 peers on 127.0.0.1 is still served in full.
    max_upload_connections_per_ip: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    #: Requests queued per connection; more are answered BUSY at once.
    max_queued_requests: int = 16
    #: Bytes a second served at most, over all connections (None: as fast as the network takes them).
    max_upload_rate: float | None = None
    #: Downloaders served at once before the choker picks who keeps a slot (``peer/slots.py``): peers that
    #: upload to us first, then those that have least; one more gets in every ``optimistic_interval``.
    upload_slots: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    optimistic_interval: float = attrs.field(default=2.0, validator=_positive)

    # -- downloading ----------------------------------------------------------
    #: Peers downloaded from at once. A peer that has not delivered a chunk within its first
    #: second no longer takes one of these places (it may yet, until ``first_answer_timeout``):
    #: up to four times as many are tried at once, so holders that never deliver cannot fill them.
    max_download_peers: int = 8
    #: Sources of one download at one IP address (one /64 for IPv6) at once. As many as
    #: ``max_download_peers`` by default, so a swarm of many peers on 127.0.0.1 downloads as
    #: before; holders are taken one per address (host and port) whatever the cap.
    max_sources_per_ip: int = attrs.field(default=8, validator=attrs.validators.ge(1))
    #: A source that answers none of our requests within this long is dropped: a holder that
    #: says WELCOME and then nothing holds our requests this long, not ``request_timeout``.
    first_answer_timeout: float = attrs.field(default=3.0, validator=_positive)
    #: Requests in flight per peer connection (pipeline depth).
    pipeline_depth: int = 8
    #: Requests per chunk once everything is requested (endgame).
    endgame_copies: int = 2
    #: Bad chunks from one peer before it is dropped for the rest of the download.
    ban_threshold: int = 2
    #: Worker threads hashing and writing chunks.
    io_threads: int = 2
    #: Write chunks, and read them back, with O_DIRECT (past the page cache) where the file
    #: system allows it. Off by default: every chunk write waits for the device and chunks
    #: served to other peers must be read back from it (see ``peer.storage.chunk_io``).
    direct_io: bool = False
    #: Read each written chunk back and check it (``get --verify-writes``). Off by default: every
    #: chunk is hashed before its write and a failed or short write fails the download, as
    #: libtorrent and aria2 trust; the read-back through the page cache (a copy and a compare)
    #: catches a write at a wrong offset or the part file changed behind the download, not a
    #: failing device (its pages are the ones just written), and costs CPU per GiB and up to
    #: ``read_back_window`` of kept bytes (figures in README "Checking what is written").
    verify_writes: bool = False
    #: A written chunk is read back from disk and checked (``verify_writes``) once this many more
    #: bytes have been written; through the page cache its verified bytes are kept until then, to
    #: compare (private memory: 64 MiB made a downloader's 100 MiB; the read-back checks the same
    #: cached pages however late it comes). The window also paces the page cache's writeback and
    #: drops (``cache_window``). See ``peer.storage.read_back.ReadBack``.
    read_back_window: int = attrs.field(default=8 * 1024 * 1024, validator=attrs.validators.ge(0))
    #: The page cache a download keeps of its file, about (the last bytes written): older
    #: chunks are written back and dropped, so a download does not fill memory with its file.
    cache_window: int = attrs.field(default=128 * 1024 * 1024, validator=attrs.validators.ge(0))
    #: With every place taken by a delivering source and another holder waiting, the source that
    #: delivered fewest chunks in this long makes room (once its requests are answered): sources
    #: rotate, a busy holder loses downloaders to idle ones, and every holder gets to upload.
    rotate_interval: float = attrs.field(default=1.0, validator=_positive)
    #: WHO_HAS refresh period while downloading.
    refresh_interval: float = attrs.field(default=0.5, validator=_positive)
    #: Verified chunks are announced in batches at most this late.
    announce_delay: float = attrs.field(default=0.1, validator=_positive)
    #: The resume state is written at most this often.
    state_save_interval: float = attrs.field(default=0.25, validator=_positive)
    #: Give up when missing chunks have had no holder for this long.
    stall_timeout: float = attrs.field(default=15.0, validator=_positive)
    #: A peer that leaves requests unanswered this long is dropped.
    request_timeout: float = attrs.field(default=15.0, validator=_positive)
    #: A failed peer is retried after this long; one that fails again (unreachable, or
    #: dropped before delivering a chunk) after twice as long each time, up to ``max_retry_delay``.
    peer_retry_delay: float = attrs.field(default=2.0, validator=_positive)
    max_retry_delay: float = attrs.field(default=60.0, validator=_positive)

    # -- tracker ------------------------------------------------------------
    connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    tracker_timeout: float = attrs.field(default=10.0, validator=_positive)
    reconnect_min_delay: float = attrs.field(default=0.2, validator=_positive)
    reconnect_max_delay: float = attrs.field(default=5.0, validator=_positive)
    #: Time allowed for DEREGISTER and closing on shutdown.
    shutdown_timeout: float = attrs.field(default=2.0, validator=_positive)

    @property
    def name(self) -> str:
        """The label, or "peer" when none was given."""
        return self.label or "peer"
