"""The chunkswarm tracker: a pure registry, an SQLite catalogue and a thin trio server.

``registry`` holds the live state (peers, files, replicas) and knows nothing of
sockets; ``store`` keeps the catalogue of manifests on disk; ``server`` is the
trio shell that speaks the protocol of ``common.codec`` to each connection.
"""
