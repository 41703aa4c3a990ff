"""The chunkswarm tracker: a pure registry, an SQLite catalogue and a thin trio shell around them.

* ``config``: :class:`TrackerConfig`, everything a tracker is told (``io`` picks the socket path).
* ``registry``: the live state (peers, files, replicas), pure and synchronous, no sockets.
* ``store``: the catalogue of manifests on disk (SQLite).
* ``replies``: reply frames built from cached bytes rather than message objects.
* ``handlers``: the request handlers, and the tables that say where each may run.
* ``connection``: one connection over any ``trio.abc.Stream``: read loop, batched
  replies, flow control, idle timeout, farewell; errors stay with their connection.
* ``hub``: the optional fast path for sockets (``io="epoll"``): one epoll for every
  connection, answering safe requests without waking the connection's task.
* ``service``: one running tracker: shared state and counters, expiry and stats
  loops, and the entry point :func:`~tracker.service.serve_tracker`.
"""
